"""RELAY_AMQP_QUORUM=1: relay's RabbitMQ queues are quorum queues (replicated across a
RabbitMQ cluster), and retries with a countdown still arrive (through RabbitMQ's native
delayed delivery). On the local single-node RabbitMQ."""

from __future__ import annotations

import json

import pytest
import requests
from amqp.exceptions import PreconditionFailed
from kombu import Connection

from relay.ops.broker import QUEUES
from tests.conftest import load_fixture
from tests.harness import (
    WorkerProcess,
    amqp_turn,
    amqp_unreachable,
    amqp_url,
    drop_amqp_queues,
    fresh_db_url,
    relay_env,
    reset_amqp_queues,
    wait_until,
    web_process,
    without_credentials,
)
from tests.httpsink import HttpSink
from tests.skips import skip_or_fail

pytestmark = pytest.mark.e2e


def declared_as(url: str, name: str, queue_type: str) -> bool:
    """True when declaring ``name`` as ``queue_type`` matches what RabbitMQ holds (it
    refuses a declaration that differs: PRECONDITION_FAILED)."""
    with Connection(url, connect_timeout=5) as connection:
        with connection.channel() as channel:
            try:
                channel.queue_declare(
                    name, durable=True, auto_delete=False, arguments={"x-queue-type": queue_type}
                )
            except PreconditionFailed:
                return False
    return True


@pytest.fixture
def rabbitmq():
    url = amqp_url()
    reason = amqp_unreachable(url)
    if reason:
        skip_or_fail("RabbitMQ", f"not reachable at {without_credentials(url)}: {reason}")
    with amqp_turn(url, timeout=60) as turn:
        if not turn:
            skip_or_fail("RabbitMQ", f"{without_credentials(url)} busy: another test session")
        drop_amqp_queues(url)
        yield url
        reset_amqp_queues(url)  # classic again, as the other tests declare them


def answers(sink: HttpSink) -> set[tuple[str, int]]:
    """(text, status) of every request the sink answered."""
    return {(json.loads(request.body)["text"], status) for request, status in sink.answered()}


def test_quorum_queues_are_declared_and_carry_retries(rabbitmq, redis_server, tmp_path):
    sink = HttpSink()
    sink.fail_first_attempts()
    rules = tmp_path / "rules.yaml"
    with sink:
        rules.write_text(
            "version: 1\n"
            f"destinations:\n  app: {{type: http, url: '{sink.url('/in')}', "
            "retry: {attempts: 5, initial: 1s, max: 1s}}\n"
            "routes:\n  - {name: inbound, match: {kind: inbound_message}, to: [app]}\n"
        )
        redis_url = fresh_db_url(redis_server)
        env = relay_env(
            redis_url, RELAY_BROKER_URL=rabbitmq, RELAY_AMQP_QUORUM="1", RELAY_RULES=str(rules)
        )
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            assert all(declared_as(rabbitmq, name, "quorum") for name in QUEUES)
            assert not any(declared_as(rabbitmq, name, "classic") for name in QUEUES)
            with web_process(redis_url, tmp_path / "web.log", **env) as port:
                texts = [f"quorum {i}" for i in range(5)]
                for text in texts:
                    answer = requests.post(
                        f"http://127.0.0.1:{port}/webhooks/webex-connect",
                        json={**load_fixture("inbound-sms.json"), "message": text},
                        timeout=10,
                    )
                    assert answer.status_code == 200
                wait_until(lambda: {(t, 200) for t in texts} <= answers(sink), 30)
        finally:
            worker.stop()
    assert {(t, 503) for t in texts} <= answers(sink)  # each went through a retry
    log = worker.log_path.read_text()
    assert "Connected to amqp://" in log
    assert "Task relay.deliver" in log
