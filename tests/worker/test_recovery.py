"""Recovery with real processes: work a dead worker node held is resumed, and soon.

- ``relay up`` killed with SIGKILL as a whole tree, then started again on its data dir:
  what was in flight is delivered seconds after the restart;
- its embedded Redis killed while events arrive: ``relay up`` starts it again, the web
  answers 200 again, and nothing answered 200 is lost;
- one of two workers killed mid-delivery: the other takes its work over once the dead
  node's heartbeat is missed, long before the broker's visibility timeout (with the Redis
  broker and with RabbitMQ);
- a delivery slower than a node's lease (``NODE_TTL``) is not taken over, not sent twice;
- two workers on one host share the work, with the Redis broker and with RabbitMQ.

RabbitMQ variants (the ``broker`` fixture) skip, saying why, when it is not reachable.

Each scenario checks that every accepted event reached the receiver (answered 2xx) and
that relay recorded it as delivered; the figures go to the session summary.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import requests

from relay.cli.embedded import free_port
from relay.settings import load_settings
from relay.state import keys
from relay.state.pending import HEARTBEAT, NODE_TTL
from relay.web.app import create_app
from relay.worker.sweeper import INTERVAL
from tests.cli.test_up import processes_with
from tests.harness import ROOT, WorkerProcess, fresh_db_url, relay_env, wait_until
from tests.httpsink import Answer, HttpSink

RULES = """
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: {timeout}
    retry: {{attempts: 20, initial: 200ms, max: 1s}}
routes:
  - {{name: all, to: [hook]}}
"""


def write_rules(tmp_path: Path, sink: HttpSink, timeout: str = "10s") -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.format(url=sink.url("/hook"), timeout=timeout))
    return path


def payload(label: str) -> dict:
    return {"oa": "447700900123", "da": "12345", "message": f"{label} {uuid.uuid4().hex}"}


def delivery_id(event_id: str) -> str:
    return f"{event_id}:hook"


def answered_2xx(sink: HttpSink) -> collections.Counter:
    """How often the receiver answered 2xx to each delivery id."""
    return collections.Counter(
        request.header("webhook-id")
        for request, status in sink.answered()
        if request.path == "/hook" and 200 <= status < 300
    )


def undelivered(client: redis.Redis, sink: HttpSink, event_ids: list[str]) -> list[str]:
    """The events the receiver did not answer 2xx yet, or relay did not record as done."""
    seen = answered_2xx(sink)
    pipe = client.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.exists(keys.delivery(delivery_id(event_id), "done"))
    done = pipe.execute()
    return [
        event_id
        for event_id, is_done in zip(event_ids, done, strict=True)
        if not (is_done and seen[delivery_id(event_id)])
    ]


def wait_delivered(
    client: redis.Redis, sink: HttpSink, event_ids: list[str], timeout: float
) -> float:
    """Seconds until every event was delivered and relay settled all its work (the
    pending outbox is empty); AssertionError saying what is missing after ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            left = undelivered(client, sink, event_ids)
            pending = client.zcard(keys.PENDING)
        except redis.ConnectionError:  # a Redis being restarted
            left, pending = event_ids, -1
        elapsed = time.monotonic() - started
        if not left and pending == 0:
            return elapsed
        if elapsed > timeout:
            raise AssertionError(
                f"{len(left)} of {len(event_ids)} events not delivered within {timeout:g}s "
                f"(e.g. {left[:3]}); {pending} pending"
            )
        time.sleep(0.2)


def repeats(sink: HttpSink) -> int:
    counts = answered_2xx(sink)
    return sum(counts.values()) - len(counts)


# -- `relay up` as a user runs it -----------------------------------------------------------


class Up:
    """``relay up`` on ``data_dir`` with ``rules``, as a subprocess; ready once it says so
    (after its /healthz answered)."""

    def __init__(self, data_dir: Path, rules: Path, log: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log = log
        self.marker = f"RELAY_DATA_DIR={data_dir}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        full_env.update(
            RELAY_DATA_DIR=str(data_dir),
            RELAY_RULES=str(rules),
            RELAY_LOG_FORMAT="console",
            **env,
        )
        self._out = open(log, "wb")  # noqa: SIM115 - closed in kill_tree() / stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "up", "--port", str(self.port)],
            env=full_env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: "is up" in self.output() or self.process.poll() is not None, 60)
        assert self.process.poll() is None, self.output()
        self.ready_at = time.monotonic()
        redis_url = (data_dir / "redis.url").read_text().strip()
        self.redis_port = urlsplit(redis_url).port
        self.redis = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str = "/webhooks/webex-connect") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, label: str) -> str:
        answer = requests.post(self.url(), json=payload(label), timeout=5)
        assert answer.status_code == 200, answer.text
        (event_id,) = answer.json()["accepted"]
        return event_id

    def redis_server_pid(self) -> int:
        """redis-server's pid. Found by its process title: redis-server writes the title
        over its environment, so :func:`processes_with` does not see it."""
        (pid,) = _live_pids(f"redis-server 127.0.0.1:{self.redis_port}\0".encode())
        return pid

    def tree(self) -> set[int]:
        """The supervisor and every process it started."""
        title = f"redis-server 127.0.0.1:{self.redis_port}\0".encode()
        return set(processes_with(self.marker)) | set(_live_pids(title))

    def kill_tree(self) -> int:
        """SIGKILL the supervisor and everything it started (each child in a session of
        its own). All are stopped first, so no child gets the clean-stop signal of its
        dying parent and nothing is restarted meanwhile. Returns how many were killed."""
        stopped: set[int] = set()
        while pids := self.tree() - stopped:
            for pid in pids:
                _signal(pid, signal.SIGSTOP)
            stopped |= pids
        for pid in stopped:
            _signal(pid, signal.SIGKILL)
        self.process.wait(10)
        self._close()
        wait_until(lambda: not self.tree(), 20)
        return len(stopped)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_tree()
        self._close()

    def _close(self) -> None:
        self.redis.close()
        self._out.close()


def _live_pids(title: bytes) -> list[int]:
    """Pids of live (not zombie) processes whose command line holds ``title``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if title in (entry / "cmdline").read_bytes():
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture
def start_up():
    """``start_up(data_dir, rules, log, **env) -> Up``; each stopped after the test."""
    started: list[Up] = []

    def start(data_dir: Path, rules: Path, log: Path, **env: str) -> Up:
        started.append(Up(data_dir, rules, log, **env))
        return started[-1]

    yield start
    for up in started:
        up.stop()


class Poster:
    """Posts one event every ``pause`` seconds in a thread, noting when each request
    started and how it was answered."""

    def __init__(self, url: str, pause: float = 0.05) -> None:
        self.url = url
        self.pause = pause
        self.sent: list[tuple[float, int | None, list[str]]] = []  #: (start, status, ids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poster:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.wait(self.pause):
                started = time.monotonic()
                try:
                    answer = session.post(self.url, json=payload("flow"), timeout=5)
                    ids = answer.json()["accepted"] if answer.status_code == 200 else []
                    self.sent.append((started, answer.status_code, ids))
                except requests.RequestException:
                    self.sent.append((started, None, []))

    @property
    def accepted(self) -> list[str]:
        return [event_id for _, _, ids in list(self.sent) for event_id in ids]

    def first_200_after(self, moment: float) -> float | None:
        """When the first request that started after ``moment`` and was answered 200
        started, or None."""
        return next((t for t, status, _ in list(self.sent) if t > moment and status == 200), None)

    def answered_after(self, moment: float) -> collections.Counter:
        return collections.Counter(status for t, status, _ in list(self.sent) if t > moment)


@pytest.mark.faults
def test_up_killed_as_a_whole_tree_delivers_everything_after_restart(
    tmp_path, sink, start_up, fault_report
):
    sink.default = Answer(200, delay=2.0)
    rules = write_rules(tmp_path, sink)
    data_dir = tmp_path / "var"
    # 8 intake threads: at the kill, some events are delivered, some in flight, some queued
    first = start_up(data_dir, rules, tmp_path / "first.log", RELAY_WORKER_INTAKE_THREADS="8")
    ids = [first.post(f"crash {number}") for number in range(40)]
    posted = time.monotonic()
    wait_until(lambda: len(list(first.redis.scan_iter("relay:dlv:*:done"))) >= 5, 30, 0.1)
    time.sleep(max(0.0, posted + 1.2 - time.monotonic()))  # past one append-only fsync
    before = {request.header("webhook-id") for request in sink.requests}
    in_flight = len(before) - len(list(first.redis.scan_iter("relay:dlv:*:done")))
    lock_left = first.redis.pttl(keys.lock("sweeper"))  # the killed run's last sweep
    killed_at = time.monotonic()
    killed = first.kill_tree()
    assert killed >= 5, first.output()  # relay up, redis-server, gunicorn (2+), celery

    second = start_up(data_dir, rules, tmp_path / "second.log", RELAY_WORKER_INTAKE_THREADS="8")
    took = wait_delivered(second.redis, sink, ids, 30)
    fault_report.append(
        f"relay up tree SIGKILLed ({killed} processes), restarted: 40 accepted, "
        f"{len(before)} sent before the kill ({in_flight} in flight), 40 delivered "
        f"{took:.1f}s after the restart was ready, {repeats(sink)} repeated"
    )
    # at start, not NODE_TTL later: the killed run's work was published again at once
    assert "resumed the last run's work" in second.output(), (
        f"the killed run's sweeper lock had {lock_left} ms left; the restart was ready "
        f"{second.ready_at - killed_at:.1f}s after the kill"
    )


@pytest.mark.faults
def test_embedded_redis_killed_under_up_while_events_arrive(tmp_path, sink, start_up, fault_report):
    up = start_up(tmp_path / "var", write_rules(tmp_path, sink), tmp_path / "up.log")
    with Poster(up.url()) as poster:
        wait_until(lambda: len(poster.accepted) >= 10, 20)
        old_pid = up.redis_server_pid()
        killed = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        back = wait_until(lambda: poster.first_200_after(killed), 15, 0.1)
        wait_until(lambda: poster.answered_after(back)[200] >= 10, 20, 0.1)
    outage = poster.answered_after(killed)
    assert back - killed < 10, outage
    assert up.redis_server_pid() != old_pid
    assert "redis died; restarting it" in up.output()
    accepted = poster.accepted
    took = wait_delivered(up.redis, sink, accepted, 60)
    fault_report.append(
        f"embedded Redis SIGKILLed under relay up while posting: 200 again after "
        f"{back - killed:.1f}s (answers after the kill: {dict(outage)}), "
        f"{len(accepted)} accepted, {len(accepted)} delivered ({took:.1f}s after the last), "
        f"{repeats(sink)} repeated"
    )


# -- separate workers on a shared broker ----------------------------------------------------


class Workers:
    """Worker processes sharing ``env`` (started at once), and a web app posting to them."""

    def __init__(self, tmp_path: Path, env: dict[str, str], count: int = 2) -> None:
        self.env = env
        self.workers = [WorkerProcess(env, tmp_path / f"worker{n}.log") for n in range(count)]
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(WorkerProcess.start, self.workers))
        self.client = create_app(load_settings(env)).test_client()
        self.redis = redis.Redis.from_url(env["RELAY_REDIS_URL"], decode_responses=True)

    def post(self, count: int, label: str) -> list[str]:
        ids = []
        for number in range(count):
            answer = self.client.post("/webhooks/webex-connect", json=payload(f"{label} {number}"))
            assert answer.status_code == 200, answer.json
            ids += answer.json["accepted"]
        return ids

    def owned(self) -> dict[WorkerProcess, set[str]]:
        """What each worker's node holds now."""
        held = {}
        for node in self.redis.zrange(keys.NODES, 0, -1):
            pid = int(node.split(":")[-2])  # host:pid:random
            worker = next(w for w in self.workers if w.pid == pid)
            held[worker] = self.redis.smembers(keys.owned(node))
        return held

    def logs(self) -> list[str]:
        return [worker.log_path.read_text(errors="replace") for worker in self.workers]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(signal.SIGKILL)
        self.redis.close()


@pytest.fixture
def start_workers(tmp_path):
    started: list[Workers] = []

    def start(env: dict[str, str], count: int = 2) -> Workers:
        started.append(Workers(tmp_path, env, count))
        return started[-1]

    yield start
    for workers in started:
        workers.close()


@pytest.mark.faults
def test_killed_worker_s_work_is_taken_over_long_before_the_visibility_timeout(
    broker, tmp_path, redis_server, sink, start_workers, fault_report
):
    sink.default = Answer(200, delay=3.0)
    rules = write_rules(tmp_path, sink)
    env = relay_env(fresh_db_url(redis_server), RELAY_RULES=str(rules), **broker.env)
    assert load_settings(env).visibility_timeout == 300  # the default, not shortened
    workers = start_workers(env)
    ids = workers.post(40, "takeover")
    wait_until(lambda: len(sink.requests) >= 20, 20)
    held = workers.owned()
    victim = max(held, key=lambda worker: len(held[worker]))
    deliveries = {m for m in held[victim] if m.startswith("deliver:")}
    assert deliveries, held  # it has deliveries in flight
    victim.stop(signal.SIGKILL)
    took = wait_delivered(workers.redis, sink, ids, 90)
    survivor = next(w for w in workers.workers if w is not victim)
    assert "took over" in survivor.log_path.read_text()
    fault_report.append(
        f"one of two workers SIGKILLed mid-delivery ({broker.name} broker, visibility "
        f"timeout 300 s): "
        f"40 accepted, {len(held[victim])} held by it ({len(deliveries)} deliveries), "
        f"40 delivered {took:.1f}s after the kill, {repeats(sink)} repeated"
    )


@pytest.mark.faults
def test_delivery_slower_than_the_lease_is_not_taken_over(
    tmp_path, redis_server, sink, start_workers, fault_report
):
    slow = NODE_TTL + 5  # seconds: longer than a silent node is given
    sink.script(Answer(200, delay=slow))
    rules = write_rules(tmp_path, sink, timeout=f"{int(slow) + 10}s")
    workers = start_workers(relay_env(fresh_db_url(redis_server), RELAY_RULES=str(rules)))
    (event_id,) = workers.post(1, "slow")
    did = delivery_id(event_id)
    (request,) = sink.wait_for(1, 10)
    # past the lease: the node still holds the delivery and still beats
    time.sleep(max(0.0, request.at + NODE_TTL + 2 * HEARTBEAT - time.monotonic()))
    holders = [w for w, members in workers.owned().items() if f"deliver:{did}" in members]
    assert len(holders) == 1, workers.owned()
    wait_delivered(workers.redis, sink, [event_id], slow + 10)
    time.sleep(2 * INTERVAL + 1)  # two more sweeps: nothing is published again
    sent = [r for r in sink.requests if r.header("webhook-id") == did]
    assert len(sent) == 1, [r.at - request.at for r in sent]
    assert workers.redis.get(keys.delivery(did, "n")) == "1"  # one attempt started
    for log in workers.logs():
        assert "took over" not in log and "republished" not in log
    fault_report.append(
        f"a delivery taking {slow:g}s (lease {NODE_TTL:g}s) with two workers alive: sent once"
    )


@pytest.mark.e2e
def test_two_workers_on_one_host_share_the_work(
    broker, tmp_path, redis_server, sink, start_workers, fault_report
):
    sink.script(*[Answer(503)] * 30)  # 30 first attempts fail: their retries go by the broker
    rules = write_rules(tmp_path, sink)
    env = relay_env(fresh_db_url(redis_server), RELAY_RULES=str(rules), **broker.env)
    workers = start_workers(env)
    ids = workers.post(200, "share")
    wait_delivered(workers.redis, sink, ids, 60)
    logs = workers.logs()
    for log in logs:
        assert "RESOURCE_LOCKED" not in log and "pidbox" not in log, log
    delivered = [re.findall(r"delivered \(attempt (\d+)\)", log) for log in logs]
    assert all(delivered), [len(d) for d in delivered]  # both took part
    assert sum(len(d) for d in delivered) == 200
    assert any(attempt != "1" for d in delivered for attempt in d)  # retries were delivered
    assert set(answered_2xx(sink).values()) == {1}
    fault_report.append(
        f"two workers on one host, {broker.name} broker: 200 accepted, 200 delivered "
        f"({' + '.join(str(len(d)) for d in delivered)}), 30 retried, 0 repeated"
    )
