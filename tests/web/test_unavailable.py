"""Redis unreachable at ingest: a fast 503 with Retry-After, never a hang."""

from __future__ import annotations

import os
import signal
import time

import pytest

from relay.cli.embedded import EmbeddedRedis
from relay.settings import load_settings
from relay.web.app import create_app
from tests.conftest import load_fixture
from tests.harness import relay_env

URL = "/webhooks/webex-connect"


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def client(own_redis):
    return create_app(load_settings(relay_env(own_redis.url))).test_client()


def timed_post(client, payload):
    started = time.monotonic()
    answer = client.post(URL, json=payload)
    return answer, time.monotonic() - started


def inbound(text: str) -> dict:
    return {**load_fixture("inbound-sms.json"), "message": text}


def test_redis_stopped_gives_503_quickly_and_recovers(client, own_redis):
    assert client.post(URL, json=inbound("before")).status_code == 200
    own_redis.stop()
    answer, elapsed = timed_post(client, inbound("while down"))
    assert answer.status_code == 503
    assert answer.json["error"] == "unavailable"
    assert int(answer.headers["Retry-After"]) > 0
    assert elapsed < 2.0
    assert client.get("/readyz").status_code == 503
    own_redis.start()
    answer = client.post(URL, json=inbound("while down"))
    assert answer.status_code == 200, answer.json
    assert len(answer.json["accepted"]) == 1
    assert client.get("/readyz").status_code == 200


def test_hung_redis_gives_503_within_two_seconds(client, own_redis):
    assert client.post(URL, json=inbound("before")).status_code == 200
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        answer, elapsed = timed_post(client, inbound("while hung"))
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert answer.status_code == 503
    assert elapsed < 2.0
    assert client.post(URL, json=inbound("after")).status_code == 200


def test_a_503_does_not_make_the_retry_a_duplicate(client, own_redis):
    own_redis.stop()
    assert client.post(URL, json=inbound("retried")).status_code == 503
    own_redis.start()
    answer = client.post(URL, json=inbound("retried"))
    assert answer.json["duplicates"] == 0 and len(answer.json["accepted"]) == 1


def test_readyz_warns_when_redis_may_evict_keys(client, own_redis):
    import redis as redis_py

    assert client.get("/readyz").json["warnings"] == []
    redis_py.Redis.from_url(own_redis.url).config_set("maxmemory-policy", "allkeys-lru")
    answer = client.get("/readyz")
    assert answer.status_code == 200
    (warning,) = answer.json["warnings"]
    assert "allkeys-lru" in warning and "noeviction" in warning


def test_up_warns_when_the_configured_redis_may_evict_keys(own_redis, tmp_path):
    import subprocess
    import sys

    import redis as redis_py

    from relay.cli.embedded import free_port
    from tests.harness import ROOT

    redis_py.Redis.from_url(own_redis.url).config_set("maxmemory-policy", "volatile-lru")
    env = relay_env(own_redis.url, RELAY_DATA_DIR=str(tmp_path))
    process = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "up", "--port", str(free_port())],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "is up" in line or len(lines) > 400:
                break
        assert any("warning: Redis maxmemory-policy is 'volatile-lru'" in x for x in lines)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


# -- the answers name no host or port: they are logged instead -----------------------------


def where(url: str) -> list[str]:
    """What of ``url`` must not reach a caller: its host:port and its port."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return [f"{parts.hostname}:{parts.port}", str(parts.port)]


def test_the_503_says_redis_is_down_without_saying_where(client, own_redis, caplog):
    own_redis.stop()
    with caplog.at_level("WARNING", logger="relay.web"):
        answer = client.post(URL, json=inbound("while down"))
    assert answer.status_code == 503
    assert answer.json == {"error": "unavailable", "detail": "redis not answering"}
    for text in where(own_redis.url):
        assert text not in answer.get_data(as_text=True)
    assert where(own_redis.url)[0] in caplog.text  # the operator still sees it


def test_readyz_says_redis_is_down_without_saying_where(client, own_redis, caplog):
    own_redis.stop()
    with caplog.at_level("WARNING", logger="relay.web"):
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json["checks"]["redis"] == "redis not answering"
    assert answer.json["checks"]["broker"] == "redis not answering"  # the same Redis
    for text in where(own_redis.url):
        assert text not in answer.get_data(as_text=True)
    assert where(own_redis.url)[0] in caplog.text


def test_readyz_says_the_broker_is_down_without_saying_where(redis_server, caplog):
    from tests.httpsink import closed_port

    broker = f"redis://127.0.0.1:{closed_port()}/0"
    env = relay_env(redis_server.url, RELAY_BROKER_URL=broker, RELAY_ENQUEUE_TIMEOUT="0.2s")
    client = create_app(load_settings(env)).test_client()
    with caplog.at_level("WARNING", logger="relay.web"):
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json["checks"]["redis"] == "ok"
    assert answer.json["checks"]["broker"] == "broker not answering"
    for text in where(broker):
        assert text not in answer.get_data(as_text=True)
    assert "not ready: broker" in caplog.text
