"""``relay events show`` in process (click's runner) against the suite's real Redis: the
order of a message's receipts, both times of each, and headings cut to a screen's width."""

from __future__ import annotations

from click.testing import CliRunner

from relay import parsing
from relay.cli import main
from relay.cli.events import format_timeline
from relay.ops.history import timeline
from relay.state import Store
from tests.conftest import load_fixture

TRANSID = "7f3af32c-8d6a-4173-b1c8-4805135ada71"


def receipt(fixture: str, timestamp: str) -> dict:
    payload = load_fixture(fixture)
    notification = payload["deliveryInfoNotification"]
    notification["transid"] = TRANSID
    notification["deliveryInfo"]["timeStamp"] = timestamp
    return payload


def routed(store: Store, payload: dict) -> dict:
    """``payload`` as ingest and a worker leave it: an event, received, with its history."""
    (event,), _ = parsing.build_events(payload, "default", frozenset())
    store.route(event, [{"step": "received", "rules_version": "v"}], jobs=[], holds=[])
    return event


def test_receipts_show_in_their_own_time_order_with_both_times(redis_server, store):
    clicked = routed(store, receipt("receipt-clicked.json", "2022-10-10T13:55:02.000+01:00"))
    delivered = routed(store, receipt("receipt-delivered.json", "2022-10-10T13:53:20.100+01:00"))
    submitted = routed(store, receipt("receipt-submitted.json", "2022-10-10T13:53:13.749+01:00"))

    done = CliRunner().invoke(
        main, ["events", "show", TRANSID], env={"RELAY_REDIS_URL": redis_server.url}
    )
    assert done.exit_code == 0, done.output
    heads = [block.splitlines()[0] for block in done.output.strip().split("\n\n")]
    assert [head.split()[0] for head in heads] == [
        submitted["id"],
        delivered["id"],
        clicked["id"],
    ]
    assert heads[0].startswith(f"{submitted['id']} delivery_receipt Submitted 7501")
    assert "timestamp 2022-10-10T13:53:13.749+01:00" in heads[0]
    assert f"received {submitted['received_at']}" in heads[0]


def test_a_long_keyword_is_cut_in_the_heading():
    event = {
        "id": "01LONG",
        "kind": "inbound_message",
        "source": "default",
        "received_at": "2024-01-01T00:00:00.000Z",
        "tid": "t-1",
        "keyword": "K" * 1600,
    }
    head = format_timeline(timeline(event, [])).splitlines()[0]
    assert head.startswith("01LONG inbound_message " + "K" * 59 + "… · source default")
    assert len(head) < 160


def test_the_deliveries_of_a_re_route_are_told_from_the_first_routing_s():
    event = {
        "id": "01TWICE",
        "kind": "inbound_message",
        "source": "default",
        "received_at": "2024-01-01T00:00:00.000Z",
        "keyword": "HELLO",
    }
    first, again = "01TWICE:hook", "01TWICE:hook~2"
    history = [
        {"step": "received", "at": "2024-01-01T00:00:00.001Z", "rules_version": "v1"},
        {
            "step": "routed",
            "at": "2024-01-01T00:00:00.002Z",
            "routes": ["all"],
            "destinations": ["hook"],
        },
        {
            "step": "dead_lettered",
            "at": "2024-01-01T00:00:01.000Z",
            "delivery_id": first,
            "route": "all",
            "destination": "hook",
            "reason": "HTTP 400",
        },
        {
            "step": "rerouted",
            "at": "2024-01-01T00:01:00.000Z",
            "rules_version": "v2",
            "routing": 2,
            "routes": ["all"],
            "destinations": ["hook"],
            "delivery_ids": [again],
        },
        {
            "step": "delivered",
            "at": "2024-01-01T00:01:00.100Z",
            "delivery_id": again,
            "route": "all",
            "destination": "hook",
        },
    ]
    lines = [
        line.split(maxsplit=1)[1]
        for line in format_timeline(timeline(event, history)).splitlines()[1:]
    ]
    assert "hook dead-lettered: HTTP 400" in lines
    assert "hook (re-route 2) delivered" in lines
    assert lines[-1] == "hook dead_lettered, hook (re-route 2) delivered"
