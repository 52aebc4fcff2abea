"""Message lifecycle state (relay.state.lifecycle) through the routing call that stores
each receipt, against the suite's real Redis: a deadline opened by the first receipt,
cancelled by a final one in time, claimed once when due, late after that; claims of a
dead node due again; the size of a record."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import pytest

from relay.events import Step, history_entry
from relay.parsing import build_events
from relay.state import Store, connect, keys
from relay.state.lifecycle import (
    FINAL_IN_TIME,
    FINAL_LATE,
    LIBRARY,
    TRACKED,
    UNTRACKED,
    receipt_args,
)
from tests.conftest import load_fixture

WITHIN = 60.0


@pytest.fixture
def client(redis_server):
    client = connect(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def node_store(client):
    return Store(client, 3600, 3600, node="node-a")


def receipt(transid, status, code="7501", timestamp="2026-12-01T10:00:00.000Z", callback=""):
    payload = load_fixture("receipt-failed-invalid-address.json")
    notification = payload["deliveryInfoNotification"]
    notification.update(transid=transid, callbackData=callback, correlationid="corr-1")
    info = notification["deliveryInfo"]
    info.update(deliveryStatus=status, code=code, destination="447700900123", timeStamp=timestamp)
    (event,), _ = build_events(payload, "default", set())
    return event


def route(store: Store, event, within: float | None = WITHIN):
    entries = [history_entry(Step.RECEIVED, rules_version="v1")]
    return store.route_in_turn(event, entries, [], [], within=within)


def test_a_final_receipt_in_time_cancels_the_deadline(node_store, client):
    assert route(node_store, receipt("m1", "Submitted")).lifecycle.what == TRACKED
    assert node_store.lifecycle.due_count() == 1
    final = route(node_store, receipt("m1", "Delivered", "7500", "2026-12-01T10:00:42.500Z"))
    assert final.lifecycle.what == FINAL_IN_TIME
    # by their own timestamps: the first receipt's, read back for the time to final
    assert final.lifecycle.first_own == pytest.approx(1796119200.0)
    assert node_store.lifecycle.claim_due(time.time() + 2 * WITHIN) == []
    assert node_store.lifecycle.due_count() == 0  # its entry, passed over when due
    assert node_store.lifecycle.message("m1").state == "final"


def test_a_due_message_is_claimed_once_with_its_last_receipt_then_a_final_one_is_late(
    node_store, client
):
    route(node_store, receipt("m2", "Submitted", callback="campaign=spring"))
    route(node_store, receipt("m2", "Submitted", code="7501", callback="campaign=summer"))
    assert node_store.lifecycle.claim_due(time.time() + WITHIN - 5) == []
    (message,) = node_store.lifecycle.claim_due(time.time() + WITHIN + 1)
    assert (message.transid, message.state, message.last_status) == ("m2", "overdue", "Submitted")
    assert (message.last_code, message.destination) == ("7501", "447700900123")
    assert (message.callback_data, message.correlation_id) == ("campaign=summer", "corr-1")
    assert client.smembers(keys.lifecycle_claimed("node-a")) == {"m2"}
    other = Store(client, 3600, 3600, node="node-b")
    assert other.lifecycle.claim_due(time.time() + 2 * WITHIN) == []  # once
    node_store.lifecycle.fired(["m2"])
    assert client.smembers(keys.lifecycle_claimed("node-a")) == set()
    late = route(node_store, receipt("m2", "Delivered", "7500"))
    assert late.lifecycle.what == FINAL_LATE
    assert node_store.lifecycle.message("m2").state == "late"
    assert route(node_store, receipt("m2", "Clicked", "7528")).lifecycle.what == UNTRACKED


def test_what_a_dead_node_claimed_and_did_not_fire_is_due_again(node_store, client):
    route(node_store, receipt("m3", "Submitted"))
    assert len(node_store.lifecycle.claim_due(time.time() + WITHIN + 1)) == 1  # then it dies
    other = Store(client, 3600, 3600, node="node-b")
    assert other.lifecycle.claim_due(time.time() + 2 * WITHIN) == []
    assert other.lifecycle.release("node-a") == 1
    (again,) = other.lifecycle.claim_due()
    assert (again.transid, again.state) == ("m3", "overdue")
    assert client.exists(keys.lifecycle_claimed("node-a")) == 0


def test_a_message_whose_first_receipt_is_final_gets_no_deadline(node_store, client):
    assert route(node_store, receipt("m4", "Delivered", "7500")).lifecycle.what == UNTRACKED
    assert route(node_store, receipt("m4", "Submitted")).lifecycle.what == UNTRACKED  # late copy
    assert node_store.lifecycle.due_count() == 0


def test_without_the_lifecycle_key_nothing_is_kept(node_store, client):
    assert route(node_store, receipt("m5", "Submitted"), within=None).lifecycle.what == UNTRACKED
    assert node_store.lifecycle.message("m5") is None
    assert node_store.lifecycle.due_count() == 0


def test_a_receipt_routed_twice_counts_once(node_store, client):
    event = receipt("m6", "Submitted")
    route(node_store, event)
    assert route(node_store, event).numbers is None  # the copy: routed already
    route(node_store, receipt("m6", "Delivered", "7500"))
    assert route(node_store, receipt("m6", "Delivered", "7500")).lifecycle.what == UNTRACKED


def test_an_open_message_takes_at_most_200_bytes(node_store, client):
    """Its record and its deadline, measured over 20,000 (bench lifecycle: 1,000,000)."""
    apply = client.register_script(LIBRARY + "\nreturn l_receipt(KEYS[1], ARGV, 1)\n")
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    template = receipt("x", "Submitted", timestamp=now)  # sent a moment before it arrives
    client.execute_command("MEMORY", "PURGE")
    before = client.info("memory")["used_memory"]
    pipe = client.pipeline(transaction=False)
    for _ in range(20_000):
        event = {**template, "transid": str(uuid.uuid4())}
        apply(keys=[keys.PREFIX], args=receipt_args(event, WITHIN, 3600), client=pipe)
    pipe.execute()
    grown = client.info("memory")["used_memory"] - before
    assert node_store.lifecycle.due_count() == 20_000
    assert grown / 20_000 <= 200, grown / 20_000


def test_what_a_node_claimed_and_could_not_fire_it_claims_again(node_store, client):
    route(node_store, receipt("m7", "Submitted"))
    (first,) = node_store.lifecycle.claim_due(time.time() + WITHIN + 1)  # its accept fails
    (again,) = node_store.lifecycle.claim_due(time.time() + WITHIN + 2)
    assert first.transid == again.transid == "m7"
    node_store.lifecycle.fired(["m7"])
    assert node_store.lifecycle.claim_due(time.time() + WITHIN + 3) == []
