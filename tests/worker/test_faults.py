"""Nothing lost: fault scenarios with real Redis, real workers, a real receiver.

Every scenario asserts that each accepted event reached its destination (repeats are
allowed only with the same ``webhook-id``) and reports how many repeats occurred; the
figures are printed in the test session summary.

Where the broker plays a part (retries, work taken over from a dead worker, work
published again by the sweeper, competing consumers) a scenario runs with both brokers
(the ``broker`` fixture: the suite's Redis, and RabbitMQ where reachable). These run with
the Redis broker only:

- Redis killed, or down at ingest: accepted events wait in Redis whatever the broker,
  and with Redis as broker a Redis outage is also a broker outage, the harder case;
- SIGTERM: every delivery is a first attempt, run by the worker's intake without the
  broker, and a warm shutdown finishes those under way.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from relay.cli.embedded import EmbeddedRedis
from relay.settings import load_settings
from relay.web.app import create_app
from tests.harness import WorkerProcess, relay_env, wait_until
from tests.httpsink import Answer, HttpSink

pytestmark = pytest.mark.faults

RULES = """
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 2s
    retry: {{attempts: {attempts}, initial: 200ms, max: 1s}}
routes:
  - {{name: all, to: [hook]}}
"""


class Rig:
    """An embedded Redis with append-only persistence, a receiver, workers, a web app."""

    def __init__(self, tmp_path: Path, sink: HttpSink, attempts: int = 20, **env: str) -> None:
        self.tmp_path = tmp_path
        self.sink = sink
        self.redis = EmbeddedRedis(tmp_path / "redis").start()
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(url=sink.url("/hook"), attempts=attempts))
        self.env = relay_env(
            self.redis.url, RELAY_RULES=str(rules), RELAY_VISIBILITY_TIMEOUT="3s", **env
        )
        self.client = create_app(load_settings(self.env)).test_client()
        self.workers: list[WorkerProcess] = []
        self.accepted: list[str] = []
        self.restarts = 0
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def worker(self, *args: str) -> WorkerProcess:
        log = self.tmp_path / f"worker{len(self.workers)}.log"
        worker = WorkerProcess(self.env, log, args).start()
        self.workers.append(worker)
        return worker

    def _supervise(self) -> None:
        """As `relay up` or a Procfile platform does: start again a worker that exited on
        its own (a worker may exit when Redis vanishes under it; see the README)."""
        while not self._stop.wait(0.2):
            for worker in list(self.workers):
                if worker.process.poll() not in (None, 0) and not worker.stopped:
                    worker.stopped = True
                    self.restarts += 1
                    self.worker(*worker.args)

    def post(self, count: int, prefix: str = "m") -> list[str]:
        ids = []
        for number in range(count):
            payload = {"oa": "447700900123", "da": "12345", "message": f"{prefix} {number}"}
            answer = self.client.post("/webhooks/webex-connect", json=payload)
            assert answer.status_code == 200, answer.json
            ids += answer.json["accepted"]
        self.accepted += ids
        return ids

    def delivered_ids(self) -> collections.Counter:
        """How often each delivery id reached the receiver and was answered 2xx."""
        return collections.Counter(
            request.header("webhook-id")
            for request, status in self.sink.answered()
            if request.path == "/hook" and 200 <= status < 300
        )

    def wait_all_delivered(self, timeout: float = 60.0) -> collections.Counter:
        """Wait until every accepted event reached the receiver and relay has settled all
        its work (the pending outbox is empty): then the repeats are all counted."""
        expected = {f"{event_id}:hook" for event_id in self.accepted}
        wait_until(lambda: expected <= set(self.delivered_ids()), timeout, interval=0.2)
        wait_until(lambda: relay_store(self).pending.count() == 0, timeout, interval=0.2)
        return self.delivered_ids()

    def kill(self, worker: WorkerProcess, sig: int = signal.SIGKILL) -> None:
        """Stop a worker on purpose: the supervisor leaves it alone."""
        worker.stopped = True
        worker.stop(sig)

    def close(self) -> None:
        self._stop.set()
        self._supervisor.join()
        for worker in self.workers:
            worker.stop(signal.SIGKILL)
        self.redis.stop()


@pytest.fixture
def sink():
    with HttpSink() as server:
        yield server


@pytest.fixture
def rig(tmp_path, sink):
    rigs = []

    def make(**kwargs) -> Rig:
        rigs.append(Rig(tmp_path, sink, **kwargs))
        return rigs[-1]

    yield make
    for built in rigs:
        built.close()


def report(
    fault_report, scenario: str, rig: Rig, counts: collections.Counter, broker: str = "redis"
) -> None:
    repeats = sum(counts.values()) - len(counts)
    fault_report.append(
        f"{scenario} ({broker} broker): {len(rig.accepted)} events accepted, "
        f"{len(rig.accepted)} delivered, 0 lost, {repeats} repeated, "
        f"{rig.restarts} worker restarts"
    )


def test_worker_killed_with_sigkill_mid_delivery_then_restarted(broker, rig, sink, fault_report):
    sink.default = Answer(200, delay=0.3)
    relay = rig(**broker.env)
    worker = relay.worker()
    relay.post(60)
    wait_until(lambda: len(sink.requests) >= 8, 30)
    relay.kill(worker, signal.SIGKILL)
    relay.worker()
    counts = relay.wait_all_delivered()
    report(fault_report, "worker SIGKILL mid-delivery", relay, counts, broker.name)


def test_worker_sigterm_mid_delivery_is_a_graceful_shutdown(rig, sink, fault_report):
    sink.default = Answer(200, delay=0.3)
    relay = rig()
    worker = relay.worker()
    relay.post(40)
    wait_until(lambda: len(sink.requests) >= 5, 30)
    relay.kill(worker, signal.SIGTERM)
    assert worker.process.returncode == 0
    relay.worker()
    counts = relay.wait_all_delivered()
    report(fault_report, "worker SIGTERM mid-delivery", relay, counts)
    assert set(counts.values()) == {1}  # a warm shutdown finishes what it started


def test_redis_restarted_between_accept_and_delivery(rig, sink, fault_report):
    relay = rig()
    relay.post(50)  # no worker yet: everything waits in the queue
    time.sleep(1.2)  # past one append-only fsync
    relay.redis.kill()  # a crash, not a clean shutdown
    relay.redis.start()
    relay.worker()
    counts = relay.wait_all_delivered()
    report(fault_report, "Redis killed and restarted before delivery", relay, counts)
    assert set(counts.values()) == {1}


def test_redis_down_at_ingest_then_back(rig, sink, fault_report):
    relay = rig()
    relay.worker()
    relay.post(10, "before")
    relay.redis.stop()
    started = time.monotonic()
    answer = relay.client.post(
        "/webhooks/webex-connect", json={"oa": "447700900123", "da": "12345", "message": "down"}
    )
    assert answer.status_code == 503 and time.monotonic() - started < 2.0
    assert answer.headers["Retry-After"]
    relay.redis.start()
    relay.post(10, "after")
    counts = relay.wait_all_delivered()
    report(fault_report, "Redis down at ingest (503), then back", relay, counts)


def test_destination_down_longer_than_visibility_timeout(broker, rig, sink, fault_report):
    """Every retry waits in the broker meanwhile (with RabbitMQ, which has no visibility
    timeout, the scenario is the destination down for 7 s)."""
    sink.default = Answer(503)
    relay = rig(attempts=30, **broker.env)
    worker = relay.worker()
    relay.post(20)
    wait_until(lambda: len(sink.requests) >= 20, 20)
    time.sleep(7)  # more than twice the 3 s visibility timeout
    sink.default = Answer(200)
    counts = relay.wait_all_delivered()
    after = collections.Counter(
        request.header("webhook-id") for request, status in sink.answered() if status == 200
    )
    report(fault_report, "destination down 2x visibility timeout", relay, counts, broker.name)
    assert set(after.values()) == {1}, after  # each succeeds once: no redelivery storm
    assert "duplicate task message" not in worker.log_path.read_text()


def test_poison_event_is_dead_lettered_and_others_still_flow(broker, rig, sink, fault_report):
    """The receiver kills the worker whenever the poison delivery arrives."""
    relay = rig(attempts=3, **broker.env)
    killed = []

    def kill_worker_on_poison(request):
        if b"poison" in request.body:
            for worker in relay.workers:
                if worker.running():
                    os.killpg(worker.pid, signal.SIGKILL)
            killed.append(request.at)

    sink.on_request = kill_worker_on_poison
    relay.worker()  # the rig's supervisor starts it again each time it is killed
    (poison,) = relay.post(1, "poison")
    relay.accepted.remove(poison)
    relay.post(20, "healthy")
    letter = wait_until(lambda: relay_store(relay).dead_letters.get(f"{poison}:hook"), 90)
    counts = relay.wait_all_delivered()
    # whichever ends it first: the retry budget (3 attempts started, each one killing its
    # worker), or RELAY_POISON_AFTER (the delivery published again 3 times, by take-overs
    # and the pending outbox, without ever settling)
    assert "gave up after 3 attempts" in letter["reason"] or letter["reason"].startswith(
        "poison: published again 3 times"
    )
    assert 1 <= len(killed) <= 3  # never more sends than the budget allows
    report(fault_report, "poison event killing its worker", relay, counts, broker.name)


def test_two_workers_on_one_queue_deliver_each_event_once(broker, rig, sink, fault_report):
    relay = rig(**broker.env)
    relay.worker()
    relay.worker()
    relay.post(150)
    counts = relay.wait_all_delivered()
    report(fault_report, "two workers competing", relay, counts, broker.name)
    assert set(counts.values()) == {1}
    # both took part: each delivered some (Celery's start-up banner names relay.deliver in
    # every worker's log, so the task's name proves nothing; its log line does)
    delivered = [
        re.findall(r"delivered \(attempt \d+\)", w.log_path.read_text()) for w in relay.workers
    ]
    assert all(delivered), [len(d) for d in delivered]
    assert sum(len(d) for d in delivered) == 150


def relay_store(relay: Rig):
    from relay.state import Store, connect

    return Store(connect(relay.redis.url), 3600, 3600)


def test_events_taken_by_a_pump_that_died_are_published_by_the_sweeper(
    broker, rig, sink, fault_report
):
    relay = rig(**broker.env)
    relay.post(15)  # no worker yet: the events wait in the inbox
    store = relay_store(relay)
    assert store.inbox_size() == 15
    store.client.delete("relay:inbox")  # a pump took them and died before publishing
    relay.worker()
    counts = relay.wait_all_delivered()
    report(fault_report, "inbox entries lost by a dying pump", relay, counts, broker.name)
    assert "overdue and not in any queue" in relay.workers[0].log_path.read_text()
