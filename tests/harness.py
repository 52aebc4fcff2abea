"""Real parts for the tests: a Celery worker process, polling with a deadline, the broker."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis
import requests
from kombu import Connection, Exchange, Queue
from kombu.exceptions import ChannelError, OperationalError

from relay.cli import web_argv, worker_argv
from relay.cli.embedded import free_port
from relay.events import Job, new_job
from relay.ops.broker import DELIVER_QUEUE, ROUTE_QUEUE
from relay.parsing import build_events
from relay.rules import load_rules_text
from relay.rules.reloader import StaticRules
from relay.settings import load_settings
from relay.state import Store, connect
from relay.state.keys import deliver_member
from relay.worker.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "webex-connect"


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05):
    """The first truthy value of ``predicate()``, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class Scheduler:
    """Stands in for a worker's publisher in in-process delivery tests: records each
    ``(job, countdown)`` a relay.deliver task would carry; with ``broken`` set it raises
    as a publish to an unreachable broker does."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, float]] = []
        self.broken = False

    def __call__(self, job: dict, countdown: float) -> None:
        if self.broken:
            raise OperationalError("Error 111 connecting to the broker: Connection refused")
        self.calls.append((job, countdown))


def in_process_runtime(
    redis_url: str, rules: str, max_hop: float = 30.0
) -> tuple[Runtime, Store, Scheduler]:
    """A worker's runtime in this process, for delivery tests: the suite's Redis, ``rules``
    (a rules file's text) and a :class:`Scheduler` in place of the publisher."""
    settings = load_settings({"RELAY_REDIS_URL": redis_url})
    store = Store(connect(redis_url), 3600, 3600, grace=60, node="test-node")
    scheduler = Scheduler()
    ruleset = StaticRules(load_rules_text(rules))
    return Runtime(settings, store, ruleset, scheduler, max_hop), store, scheduler


def pending_job(
    runtime: Runtime, destination: str, retry: dict, fixture: str = "receipt-delivered.json"
) -> Job:
    """A delivery of a new event (the seed payload ``fixture``) to ``destination`` by the
    route ``all``, registered in the pending outbox as routing registers it."""
    payload = json.loads((FIXTURES / fixture).read_text())
    (event,), _ = build_events(payload, "default", frozenset())
    job = new_job(event, "all", destination, runtime.rules.current.version, retry)
    runtime.store.pending.register_now(deliver_member(job["delivery_id"]), "relay.deliver", [job])
    return job


def relay_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment a relay process of the tests runs with: no RELAY_* (or OTEL_*)
    from outside.

    Callbacks are unauthenticated (RELAY_ALLOW_UNAUTHENTICATED=1) unless a test sets an
    authentication method, or ``RELAY_ALLOW_UNAUTHENTICATED="0"`` to see the refusal.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RELAY_", "OTEL_"))  # traces only where a test turns them on
    }
    env.update(
        {
            "RELAY_REDIS_URL": redis_url,
            "RELAY_LOG_FORMAT": "console",
            "RELAY_RULES": str(ROOT / "config" / "rules.yaml"),
            "RELAY_ALLOW_UNAUTHENTICATED": "1",
        }
    )
    env.update(extra)
    return env


def relay_command(
    env: dict[str, str], *args: str, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``relay ARGS…`` run as a user runs it, with exactly ``env`` (in ``cwd``); its output
    captured."""
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def web_process(redis_url: str, log: Path, **env: str) -> Iterator[int]:
    """``relay web`` (gunicorn, the Procfile's settings) as a real process on a free port,
    once ``/healthz`` answers; yields the port, stops it after."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            web_argv("127.0.0.1", port),
            env=relay_env(redis_url, **env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: process.poll() is not None or _healthy(base), 30)
        assert process.poll() is None, log.read_text()
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=1).ok
    except requests.RequestException:
        return False


class WorkerProcess:
    """``celery -A relay.worker worker`` as a real subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args
        self.process: subprocess.Popen | None = None
        self.stopped = False  #: stopped on purpose (not to be restarted)

    def start(self) -> WorkerProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            worker_argv("--without-gossip", "--without-mingle", "--without-heartbeat", *self.args),
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: b"ready." in self.log_path.read_bytes()[offset:] or self._died(), 30)
        assert not self._died(), self.log_path.read_text()
        return self

    def _died(self) -> bool:
        return self.process.poll() is not None

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """SIGTERM asks the main process for a warm shutdown; SIGKILL kills the whole group."""
        if self.process and self.process.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process:
            self._log.close()


def db_url(server, db: int) -> str:
    """The URL of database ``db`` on the suite's Redis ``server``."""
    return server.url.rsplit("/", 1)[0] + f"/{db}"


#: Redis databases for tests that start their own worker (0 and 1 are the suite's)
_databases = itertools.cycle(range(2, 16))
WEBHOOK = "/webhooks/webex-connect"


class Relay:
    """A web app (Flask test client) and a real worker sharing one fresh Redis database."""

    def __init__(self, redis_server, tmp_path: Path, rules: str, **env: str) -> None:
        from relay.settings import load_settings
        from relay.state import Store, connect
        from relay.web.app import create_app

        url = db_url(redis_server, next(_databases))
        redis.Redis.from_url(url).flushdb()
        rules_path = tmp_path / "rules.yaml"
        rules_path.write_text(rules)
        self.env = relay_env(url, RELAY_RULES=str(rules_path), **env)
        self.worker = WorkerProcess(self.env, tmp_path / "worker.log").start()
        self.client = create_app(load_settings(self.env)).test_client()
        self.store = Store(connect(url), 3600, 3600)

    def post(self, payload, path: str = WEBHOOK) -> str:
        answer = self.client.post(path, json=payload)
        assert answer.status_code == 200, answer.json
        (event_id,) = answer.json["accepted"]
        return event_id

    def steps(self, event_id: str, step: str) -> list[dict]:
        return [entry for entry in self.store.history(event_id) if entry["step"] == step]

    def finished(self, event_id: str, count: int = 1) -> list[dict]:
        """Wait until ``count`` deliveries of the event ended (delivered, dead, skipped)."""

        def done():
            ends = [
                entry
                for entry in self.store.history(event_id)
                if entry["step"] in ("delivered", "dead_lettered", "skipped")
            ]
            return ends if len(ends) >= count else None

        return wait_until(done, 20)


def fresh_db_url(redis_server) -> str:
    """The URL of a Redis database of the suite's ``redis_server`` no other test is using,
    emptied (for tests that start their own workers)."""
    url = db_url(redis_server, next(_databases))
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


# -- the broker: the suite's Redis, or RabbitMQ ----------------------------------------------

#: RabbitMQ for the ``amqp`` variants of the end-to-end and fault tests, unless
#: ``RELAY_TEST_AMQP_URL`` names another
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass
class Broker:
    """The Celery broker of a test's relay processes (the ``broker`` fixture)."""

    name: str  #: "redis" (the state store's Redis, relay's default) or "amqp"
    env: dict[str, str] = field(default_factory=dict)  #: added to the processes' environment


def amqp_url() -> str:
    return os.environ.get("RELAY_TEST_AMQP_URL") or DEFAULT_AMQP_URL


def without_credentials(url: str) -> str:
    """``host:port/vhost`` of a broker URL, for messages."""
    parts = urlsplit(url)
    return f"{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"


def amqp_unreachable(url: str) -> str | None:
    """Why RabbitMQ at ``url`` cannot be used (a short connect), or None."""
    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.connect()
    except Exception as exc:  # any reason is a reason to skip
        return f"{type(exc).__name__}: {exc}"
    return None


def drop_amqp_queues(url: str) -> None:
    """relay's queues and exchanges on RabbitMQ at ``url`` gone, whatever they were declared
    as (a quorum test, or an interrupted run of one, leaves topic exchanges and quorum
    queues, against which a classic declaration is refused)."""
    with Connection(url, connect_timeout=5) as connection:
        for name in (ROUTE_QUEUE, DELIVER_QUEUE):
            with connection.channel() as channel:
                channel.queue_delete(name)
            with connection.channel() as channel:
                channel.exchange_delete(name)


def reset_amqp_queues(url: str) -> None:
    """relay's queues on RabbitMQ at ``url`` dropped, then declared empty as relay declares
    them by default (classic queues behind direct exchanges)."""
    drop_amqp_queues(url)
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.default_channel
        for name in (ROUTE_QUEUE, DELIVER_QUEUE):
            Queue(name, Exchange(name, type="direct"), routing_key=name)(channel).declare()


def amqp_consumers(url: str) -> dict[str, int]:
    """How many consumers each of relay's queues has on RabbitMQ at ``url``."""
    counts = {}
    with Connection(url, connect_timeout=5) as connection:
        for name in (ROUTE_QUEUE, DELIVER_QUEUE):
            with connection.channel() as channel:  # a failed passive declare closes it
                try:
                    counts[name] = channel.queue_declare(queue=name, passive=True).consumer_count
                except ChannelError:  # no such queue yet
                    counts[name] = 0
    return counts


#: the exclusive queue whose holder has RabbitMQ's turn
AMQP_TURN_QUEUE = "relay-tests-turn"


@contextlib.contextmanager
def amqp_turn(url: str, timeout: float) -> Iterator[bool]:
    """One test at a time uses RabbitMQ at ``url``, across the test sessions of every
    machine that shares it: relay's queue names are fixed, so the workers of two tests would
    take (and their resets drop) each other's tasks. The turn is an exclusive queue held by
    a connection of this process: RabbitMQ refuses it to any other connection
    (RESOURCE_LOCKED) and deletes it when the holder goes, even when killed. Yields False
    when the turn did not come within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with Connection(url, connect_timeout=5, heartbeat=0) as connection:
        while True:
            channel = connection.channel()
            try:
                channel.queue_declare(AMQP_TURN_QUEUE, exclusive=True, auto_delete=True)
                break
            except ChannelError:  # another connection holds it; the channel is closed
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.2)
        yield True
