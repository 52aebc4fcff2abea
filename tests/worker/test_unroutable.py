"""The worker's last line of defence: a routing that fails for a reason that would only
repeat is dead-lettered at once as ``unroutable``; only a failure of the state store is
raised to be tried again. In process: the suite's real Redis, a real HTTP receiver.

The events here did not come through today's door (which replaces lone surrogates): they
are as an older relay accepted them, or as a bug could make them.
"""

from __future__ import annotations

import pytest
import redis
from click.testing import CliRunner

from relay.cli import main
from relay.events import ROUTING, delivery_id
from relay.parsing import build_events
from relay.samples import SAMPLE_RECEIPT
from relay.state import RedisError, is_infrastructure
from relay.state.keys import route_member
from relay.worker.routing import route_event
from tests.harness import in_process_runtime

RULES = """
version: 1
destinations:
  hook: {{type: http, url: "{url}", timeout: 2s}}
routes: [{{name: all, to: [hook]}}]
"""


@pytest.fixture
def rig(redis_server, sink):
    runtime, store, _ = in_process_runtime(redis_server.url, RULES.format(url=sink.url("/h")))
    return runtime, store


def accepted(store, **fields):
    """A receipt accepted as the web accepts one (pending routing, inbox), with ``fields``
    set on its event after the door."""
    (event,), (fp,) = build_events(SAMPLE_RECEIPT, "default", frozenset())
    event.update(fields)
    assert store.accept([fp + event["id"]], [event]) == [True]
    return event


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"code": "X\ud800Y"}, "UnicodeEncodeError"),  # issue 29: the search index key
        ({"transid": "\udfff"}, "UnicodeEncodeError"),  # a look-up by reference
    ],
)
def test_a_deterministic_routing_failure_is_dead_lettered_at_once(rig, sink, fields, error):
    runtime, store = rig
    event = accepted(store, **fields)
    assert route_event(runtime, event) == []
    record = store.dead_letters.get(delivery_id(event["id"], ROUTING))
    assert record is not None
    assert record["reason"].startswith(f"unroutable: {error}: ")
    assert record["destination"] is None
    assert store.pending.get(route_member(event["id"])) is None  # not left to be republished
    steps = [entry["step"] for entry in store.history(event["id"])]
    assert steps == ["received", "dead_lettered"]
    assert sink.requests == []


def test_the_unroutable_event_is_stored_with_valid_text_and_shown_with_its_reason(
    rig, redis_server
):
    runtime, store = rig
    event = accepted(store, code="X\ud800Y")
    route_event(runtime, event)
    assert store.event(event["id"])["code"] == "X\ufffdY"
    shown = CliRunner().invoke(
        main, ["events", "show", event["id"]], env={"RELAY_REDIS_URL": redis_server.url}
    )
    assert shown.exit_code == 0, shown.output
    assert "unroutable: UnicodeEncodeError" in shown.output


def test_redis_away_is_raised_to_be_tried_again_not_dead_lettered(redis_server, sink):
    runtime, _, _ = in_process_runtime("redis://127.0.0.1:1/0", RULES.format(url=sink.url()))
    (event,), _ = build_events(SAMPLE_RECEIPT, "default", frozenset())
    with pytest.raises(RedisError) as raised:
        route_event(runtime, event)
    assert is_infrastructure(raised.value)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (redis.ConnectionError("Connection refused"), True),
        (redis.TimeoutError("Timeout reading from socket"), True),
        (redis.ResponseError("READONLY You can't write against a read only replica."), True),
        (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), True),
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (redis.DataError("Invalid input of type: 'NoneType'."), False),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), False),
        (ValueError("Out of range float values are not JSON compliant"), False),
    ],
)
def test_only_failures_of_the_state_store_count_as_infrastructure(error, expected):
    assert is_infrastructure(error) is expected


@pytest.mark.parametrize(
    ("error", "requeued"),
    [
        (redis.ConnectionError("Connection refused"), True),
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
    ],
)
def test_a_task_gives_its_message_back_only_when_redis_itself_failed(error, requeued):
    from celery.exceptions import Reject

    from relay.worker.tasks import _requeue_on_redis_error

    @_requeue_on_redis_error
    def task(self):
        raise error

    with pytest.raises(Reject if requeued else type(error)) as raised:
        task(None)
    if requeued:
        assert raised.value.requeue
