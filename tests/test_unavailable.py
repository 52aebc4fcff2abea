"""Redis unreachable at ingest: a fast 503 with Retry-After, never a hang (DESIGN §4)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from relay.app import create_app
from relay.embedded import EmbeddedRedis
from relay.settings import load_settings
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
