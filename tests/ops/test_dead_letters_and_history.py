"""relay.ops against the suite's real Redis: dead letters, replay, purge, history."""

from __future__ import annotations

import json
import time

import pytest

from relay.ops import dead_letters
from relay.ops import history as views
from relay.state import Store

RETRY = {"attempts": 5, "initial": 0.1, "max": 0.2}


class Recorder:
    """A publisher that records what it is asked to send (and can fail or meddle)."""

    def __init__(self, on_send=None) -> None:
        self.sent: list[tuple[str, list]] = []
        self.on_send = on_send

    def send_task(self, name: str, args: list) -> None:
        if self.on_send:
            self.on_send(name, args)
        self.sent.append((name, args))


def event(event_id: str = "01EVENT", **fields) -> dict:
    return {"id": event_id, "kind": "inbound_message", "received_at": "2024-01-01T00Z", **fields}


def dead_letter(store: Store, destination: str | None = "hook", event_id: str = "01EVENT"):
    did = f"{event_id}:{destination or '(routing)'}"
    record = {
        "id": did,
        "event": event(event_id),
        "route": "all" if destination else None,
        "destination": destination,
        "rules_version": "abc123",
        "retry": RETRY if destination else None,
        "reason": "HTTP 400: bad field",
        "dead_at": "2024-01-01T00:00:01.000Z",
        "attempts": [
            {"attempt": 1, "at": "x", "outcome": "permanent", "status": 400, "error": "HTTP 400"}
        ]
        if destination
        else [],
    }
    store.dead_letters.add(record)
    return record


def outbox(store: Store) -> dict:
    """The tasks registered as pending (relay.state.store.Pending), by member."""
    tasks = store.client.hgetall("relay:pending:tasks")
    assert set(store.client.zrange("relay:pending", 0, -1)) == set(tasks)
    return {member: json.loads(spec) for member, spec in tasks.items()}


def age(store: Store, did: str, seconds: float) -> None:
    store.client.zadd("relay:dead", {did: time.time() - seconds})


def test_list_summarises_dead_letters_oldest_first_and_filters_by_destination(store):
    dead_letter(store, "hook", "01A")
    dead_letter(store, "crm", "01B")
    age(store, "01A:hook", 120)
    items = dead_letters.list_dead_letters(store)
    assert [item["id"] for item in items] == ["01A:hook", "01B:crm"]
    first = items[0]
    assert first["event_id"] == "01A" and first["route"] == "all" and first["attempts"] == 1
    assert first["last_status"] == 400 and first["last_error"] == "HTTP 400"
    assert 119 < first["age_seconds"] < 130
    assert [item["id"] for item in dead_letters.list_dead_letters(store, "crm")] == ["01B:crm"]


def test_show_gives_the_whole_record_with_its_age_and_none_for_unknown_ids(store):
    record = dead_letter(store)
    shown = dead_letters.show_dead_letter(store, record["id"])
    assert shown == {**record, "age_seconds": shown["age_seconds"]}
    assert dead_letters.show_dead_letter(store, "nope:hook") is None


def test_replay_publishes_the_same_delivery_with_a_fresh_budget(store):
    record = dead_letter(store)
    assert store.deliveries.begin(record["id"], 0, 1) == ("go", 1)  # an attempt was made
    store.deliveries.release(record["id"])
    generation = store.deliveries.next_generation(record["id"])
    publisher = Recorder()
    report = dead_letters.replay(store, publisher, [record["id"], "gone:hook"])
    job = {
        "delivery_id": record["id"],
        "event": record["event"],
        "route": "all",
        "destination": "hook",
        "rules_version": "abc123",
        "retry": RETRY,
        "gen": generation + 1,
        "not_before": None,
        "replays": 1,  # its first replay
    }
    assert publisher.sent == [("relay.deliver", [job])]
    assert outbox(store) == {f"deliver:{record['id']}": {"task": "relay.deliver", "args": [job]}}
    assert report.not_found == ["gone:hook"]
    assert report.replayed == [
        {"id": record["id"], "destination": "hook", "task": "relay.deliver", "generation": 2}
    ]
    assert store.deliveries.begin(record["id"], 2, 1) == ("go", 1)  # the budget starts again
    assert store.dead_letters.get(record["id"]) is None
    assert store.dead_letters.ids() == []
    (entry,) = store.history("01EVENT")
    assert entry["step"] == "replayed" and entry["delivery_id"] == record["id"]


def test_replay_of_a_routing_dead_letter_routes_the_event_again(store):
    record = dead_letter(store, destination=None)
    publisher = Recorder()
    dead_letters.replay(store, publisher, [record["id"]])
    assert publisher.sent == [("relay.route", [record["event"]])]
    assert list(outbox(store)) == ["route:01EVENT"]
    assert store.dead_letters.ids() == []


def test_a_dead_letter_made_anew_while_replaying_is_kept(store):
    record = dead_letter(store)

    def fail_again_at_once(name, args):
        store.dead_letters.add({**record, "reason": "again", "dead_at": "later"})

    dead_letters.replay(store, Recorder(fail_again_at_once), [record["id"]])
    assert store.dead_letters.get(record["id"])["reason"] == "again"
    assert store.dead_letters.ids() == [record["id"]]


def test_a_replay_that_cannot_publish_keeps_the_dead_letter_and_says_so(store):
    record = dead_letter(store)

    def broker_down(name, args):
        raise OSError("connection refused")

    with pytest.raises(OSError):
        dead_letters.replay(store, Recorder(broker_down), [record["id"]])
    assert store.dead_letters.get(record["id"]) == record
    steps = [entry["step"] for entry in store.history("01EVENT")]
    assert steps == ["replayed", "replay_failed"]
    assert outbox(store) == {}
    (delivery,) = views.deliveries("01EVENT", store.history("01EVENT"))
    assert delivery["state"] == "dead_lettered"


def test_replay_warns_about_a_destination_no_longer_in_the_rules_and_still_publishes(store):
    record = dead_letter(store, "old")
    publisher = Recorder()
    report = dead_letters.replay(store, publisher, [record["id"]], known_destinations={"hook"})
    assert "'old' is not in the current rules" in report.warnings[0]
    assert len(publisher.sent) == 1


def test_replay_all_of_one_destination_leaves_the_others(store):
    dead_letter(store, "hook", "01A")
    dead_letter(store, "crm", "01B")
    dead_letter(store, "hook", "01C")
    publisher = Recorder()
    report = dead_letters.replay_all(store, publisher, "hook")
    assert [item["id"] for item in report.replayed] == ["01A:hook", "01C:hook"]
    assert store.dead_letters.ids() == ["01B:crm"]


def test_purge_older_than_keeps_young_dead_letters(store):
    dead_letter(store, "hook", "01A")
    dead_letter(store, "hook", "01B")
    age(store, "01A:hook", 8 * 86400)
    assert dead_letters.purge(store, older_than=7 * 86400) == 1
    assert store.dead_letters.ids() == ["01B:hook"]
    assert store.dead_letters.get("01A:hook") is None
    assert dead_letters.purge(store) == 1
    assert store.dead_letters.ids() == []


def test_purge_of_more_than_one_batch_removes_them_all(store):
    pipe = store.client.pipeline()
    for number in range(1234):
        pipe.set(f"relay:dead:e{number}:hook", "{}")
        pipe.zadd("relay:dead", {f"e{number}:hook": number})
    pipe.execute()
    assert dead_letters.purge(store) == 1234
    assert not list(store.client.scan_iter("relay:dead*"))


# -- history --------------------------------------------------------------------------------


def h(step: str, destination: str | None = None, **fields) -> dict:
    entry = {"step": step, "at": "2024-01-01T00:00:00.000Z", **fields}
    if destination:
        entry |= {"delivery_id": f"E:{destination}", "route": "r", "destination": destination}
    return entry


ROUTED = [h("received", rules_version="v1"), h("routed", routes=["r"], destinations=["a", "b"])]


@pytest.mark.parametrize(
    ("history", "states"),
    [
        (ROUTED, {"a": "pending", "b": "pending"}),
        (ROUTED + [h("attempt", "a", attempt=1), h("delivered", "a")], {"a": "delivered"}),
        (ROUTED + [h("dead_lettered", "a", reason="HTTP 400")], {"a": "dead_lettered"}),
        (ROUTED + [h("dead_lettered", "a"), h("replayed", "a")], {"a": "pending"}),
        (
            ROUTED + [h("dead_lettered", "a"), h("replayed", "a"), h("delivered", "a")],
            {"a": "delivered"},
        ),
        (ROUTED + [h("skipped", "b", reason="cooldown")], {"b": "skipped"}),
        (ROUTED + [h("retry_scheduled", "b", attempt=1, delay=2.0)], {"b": "pending"}),
    ],
)
def test_final_state_of_each_destination_is_derived_from_the_history(history, states):
    found = {item["destination"]: item["state"] for item in views.deliveries("E", history)}
    assert found == {"a": "pending", "b": "pending"} | states


def test_attempts_carry_time_outcome_status_and_latency():
    history = ROUTED + [
        h("attempt", "a", attempt=1, outcome="transient", status=503, latency=0.01, error="e"),
        h("retry_scheduled", "a", attempt=1, delay=0.1),
        h("attempt", "a", attempt=2, outcome="ok", status=200, latency=0.02, error=None),
        h("delivered", "a", attempt=2),
    ]
    (a, b) = views.deliveries("E", history)
    assert [(x["attempt"], x["outcome"], x["status"], x["latency"]) for x in a["attempts"]] == [
        (1, "transient", 503, 0.01),
        (2, "ok", 200, 0.02),
    ]
    assert a["attempts"][0]["at"] == "2024-01-01T00:00:00.000Z"
    assert b == {
        "destination": "b",
        "delivery_id": "E:b",
        "route": None,
        "state": "pending",
        "reason": None,
        "replays": 0,
        "attempts": [],
    }


@pytest.mark.parametrize(
    ("history", "routing"),
    [
        (ROUTED, "routed"),
        ([h("received"), h("unrouted")], "unrouted"),
        ([h("received"), h("dead_lettered", reason="boom")], "dead_lettered"),
        ([h("received"), h("dead_lettered"), h("replayed", delivery_id="E:(routing)")], "pending"),
        ([h("received"), h("dead_lettered"), h("replayed", delivery_id="x"), *ROUTED], "routed"),
    ],
)
def test_routing_state_is_derived_from_the_history(history, routing):
    assert views.timeline(event("E"), history)["routing"] == routing


def test_history_by_transid_lists_every_event_by_arrival(store):
    later = event("01B", transid="T", received_at="2024-01-01T00:00:02.000Z")
    earlier = event("01A", transid="T", received_at="2024-01-01T00:00:01.000Z")
    store.route(later, [{"step": "received", "rules_version": "v"}], jobs=[], holds=[])
    store.route(earlier, [{"step": "received", "rules_version": "v"}], jobs=[], holds=[])
    found = views.event_history(store, "T")
    assert [item["id"] for item in found] == ["01A", "01B"]
    assert found[0]["rules_version"] == "v"
    assert [item["id"] for item in views.event_history(store, "01B")] == ["01B"]
    assert views.event_history(store, "unknown") == []


def test_history_by_transid_lists_receipts_in_their_own_time_order(store):
    """Posted Clicked, Delivered, Submitted; their timeStamps say Submitted first."""
    arrivals = [
        ("01A", "Clicked", "2022-10-10T13:53:20.000+01:00"),
        ("01B", "Delivered", "2022-10-10T12:53:15.500Z"),  # 13:53:15.5 at +01:00
        ("01C", "Submitted", "2022-10-10T13:53:13.749+01:00"),
        ("01D", "Delivered", ""),  # no own time: its arrival stands in (the latest)
    ]
    for n, (event_id, status, timestamp) in enumerate(arrivals):
        receipt = event(
            event_id,
            kind="delivery_receipt",
            status=status,
            transid="T",
            timestamp=timestamp,
            received_at=f"2024-01-01T00:00:0{n}.000Z",
        )
        store.route(receipt, [{"step": "received", "rules_version": "v"}], jobs=[], holds=[])
    found = views.event_history(store, "T")
    assert [item["id"] for item in found] == ["01C", "01B", "01A", "01D"]
    assert (found[0]["timestamp"], found[0]["received_at"]) == (
        "2022-10-10T13:53:13.749+01:00",
        "2024-01-01T00:00:02.000Z",
    )


def test_receipts_with_the_same_own_time_are_in_arrival_order(store):
    for event_id, received_at in (("01B", "00:00:01"), ("01A", "00:00:02")):
        receipt = event(
            event_id,
            transid="T",
            timestamp="2022-10-10T13:53:13.749+01:00",
            received_at=f"2024-01-01T{received_at}.000Z",
        )
        store.route(receipt, [{"step": "received", "rules_version": "v"}], jobs=[], holds=[])
    assert [item["id"] for item in views.event_history(store, "T")] == ["01B", "01A"]
