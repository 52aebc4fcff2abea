"""Operator tools end to end: a real worker, a real HTTP receiver, the `relay` command run
as an operator runs it (a subprocess with the Relay's environment) and the admin API.

A replay travels through the broker as a Celery task: the command's replay runs with both
brokers (the ``broker`` fixture: the suite's Redis, and RabbitMQ where reachable)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import load_fixture
from tests.harness import ROOT, wait_until
from tests.httpsink import Answer

pytestmark = pytest.mark.e2e
TOKEN = "e2e-admin-token-0123"
TRANSID = "7f3af32c-8d6a-4173-b1c8-4805135ada71"


def rules(sink, *names: str) -> str:
    destinations = "".join(
        f"""
  {name}:
    type: http
    url: {sink.url("/" + name)}
    timeout: 1s
    retry: {{attempts: 3, initial: 100ms, max: 200ms}}"""
        for name in names
    )
    return f"""
version: 1
destinations:{destinations}
routes:
  - name: all
    match: {{}}
    to: [{", ".join(names)}]
"""


def relay_cli(relay, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        cwd=ROOT,
        env=relay.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def inbound(text: str) -> dict:
    return {**load_fixture("inbound-sms.json"), "message": text}


def delivered(relay, event_id: str, destination: str) -> bool:
    ends = relay.steps(event_id, "delivered")
    return any(entry["destination"] == destination for entry in ends)


def test_a_dead_letter_is_listed_then_replayed_with_the_same_webhook_id(broker, start_relay, sink):
    sink.script(Answer(400, body="bad field"))
    relay = start_relay(rules(sink, "hook"), **broker.env)
    event_id = relay.post(inbound("reject me once"))
    assert relay.finished(event_id)[0]["step"] == "dead_lettered"
    did = f"{event_id}:hook"

    listed = relay_cli(relay, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (item,) = json.loads(listed.stdout)["dead_letters"]
    assert (item["id"], item["destination"], item["route"]) == (did, "hook", "all")
    assert (item["attempts"], item["last_status"]) == (1, 400)
    table = relay_cli(relay, "dlq", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "AGE", "ROUTE", "DESTINATION", "ATTEMPTS", "LAST", "ERROR"]
    assert table[1].startswith(did) and "HTTP 400" in table[1]
    shown = relay_cli(relay, "dlq", "show", did)
    assert "attempt 1: permanent, status 400" in shown.stdout

    replayed = relay_cli(relay, "dlq", "replay", did)  # the sink answers 200 from now on
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {did} → hook" in replayed.stdout
    first, second = sink.wait_for(2)
    assert first.header("webhook-id") == second.header("webhook-id") == did
    wait_until(lambda: delivered(relay, event_id, "hook"))
    assert relay.store.dead_letters.ids() == []
    assert relay.store.pending.count() == 0  # the replay's outbox entry is settled

    history = relay_cli(relay, "events", "show", event_id)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    steps = [line.split(None, 1)[1] for line in lines[1:-1]]
    assert steps[0].startswith("received") and steps[1] == "routed: all → hook"
    assert [step.removeprefix("hook ").split(",")[0] for step in steps[2:]] == [
        "attempt 1: permanent",
        "dead-lettered: HTTP 400: bad field",
        "replayed",
        "attempt 1: ok",
        "delivered",
    ]
    assert lines[-1].strip() == "final: hook delivered"
    missing = relay_cli(relay, "dlq", "show", did)
    assert missing.returncode == 1 and "no dead letter" in missing.stderr


def test_replay_all_of_one_destination_and_purge_older_than(start_relay, sink):
    sink.default = Answer(400)
    relay = start_relay(rules(sink, "a", "b"))
    first, second = relay.post(inbound("one")), relay.post(inbound("two"))
    relay.finished(first, 2)
    relay.finished(second, 2)
    assert len(relay.store.dead_letters.ids()) == 4

    sink.default = Answer(200)
    done = relay_cli(relay, "dlq", "replay", "--all", "--destination", "a", "--json")
    assert done.returncode == 0, done.stderr
    replayed = [item["id"] for item in json.loads(done.stdout)["replayed"]]
    assert sorted(replayed) == sorted([f"{first}:a", f"{second}:a"])
    wait_until(lambda: delivered(relay, first, "a") and delivered(relay, second, "a"))
    assert sorted(relay.store.dead_letters.ids()) == sorted([f"{first}:b", f"{second}:b"])

    relay.store.client.zadd("relay:dead", {f"{first}:b": time.time() - 3 * 86400})
    purged = relay_cli(relay, "dlq", "purge", "--older-than", "2d")
    assert purged.stdout.strip() == "purged 1 dead letter older than 2d"
    assert relay.store.dead_letters.ids() == [f"{second}:b"]
    bad = relay_cli(relay, "dlq", "purge", "--older-than", "soon")
    assert bad.returncode == 2 and "--older-than" in bad.stderr
    assert relay.store.dead_letters.ids() == [f"{second}:b"]


def test_events_show_of_a_transid_lists_its_events_in_order(start_relay, sink):
    relay = start_relay(rules(sink, "hook"))
    submitted = relay.post(load_fixture("receipt-submitted.json"))
    delivered_id = relay.post(load_fixture("receipt-delivered.json"))
    relay.finished(submitted)
    relay.finished(delivered_id)

    text = relay_cli(relay, "events", "show", TRANSID)
    assert text.returncode == 0, text.stderr
    heads = [block.splitlines()[0] for block in text.stdout.strip().split("\n\n")]
    assert heads[0].startswith(f"{submitted} delivery_receipt Submitted 7501")
    assert heads[1].startswith(f"{delivered_id} delivery_receipt Delivered 7500")
    as_json = json.loads(relay_cli(relay, "events", "show", TRANSID, "--json").stdout)
    assert [item["id"] for item in as_json["events"]] == [submitted, delivered_id]
    (delivery,) = as_json["events"][0]["deliveries"]
    assert delivery["state"] == "delivered"
    assert set(delivery["attempts"][0]) == {
        "attempt",
        "at",
        "outcome",
        "status",
        "latency",
        "error",
    }
    unknown = relay_cli(relay, "events", "show", "no-such-id")
    assert unknown.returncode == 1 and "no event" in unknown.stderr


def receipt(fixture: str, timestamp: str) -> dict:
    """A receipt of the message TRANSID, with its own time ``timestamp``."""
    payload = load_fixture(fixture)
    payload["deliveryInfoNotification"]["transid"] = TRANSID
    payload["deliveryInfoNotification"]["deliveryInfo"]["timeStamp"] = timestamp
    return payload


def test_events_show_lists_receipts_by_their_own_time_whatever_their_arrival(start_relay, sink):
    relay = start_relay(rules(sink, "hook"))
    ids = {}  # posted Clicked, Delivered, Submitted; their own times say the reverse
    for fixture, status, timestamp in (
        ("receipt-clicked.json", "Clicked", "2022-10-10T13:55:02.000+01:00"),
        ("receipt-delivered.json", "Delivered", "2022-10-10T12:53:20.100Z"),
        ("receipt-submitted.json", "Submitted", "2022-10-10T13:53:13.749+01:00"),
    ):
        ids[status] = relay.post(receipt(fixture, timestamp))
    for event_id in ids.values():
        relay.finished(event_id)

    text = relay_cli(relay, "events", "show", TRANSID)
    assert text.returncode == 0, text.stderr
    heads = [block.splitlines()[0] for block in text.stdout.strip().split("\n\n")]
    order = ["Submitted", "Delivered", "Clicked"]
    assert [head.split()[0] for head in heads] == [ids[status] for status in order]
    assert " · timestamp 2022-10-10T13:53:13.749+01:00 · received 20" in heads[0]
    as_json = json.loads(relay_cli(relay, "events", "show", TRANSID, "--json").stdout)
    assert [item["id"] for item in as_json["events"]] == [ids[status] for status in order]
    assert as_json["events"][1]["timestamp"] == "2022-10-10T12:53:20.100Z"


def test_the_api_lists_replays_and_shows_history_behind_the_token(start_relay, sink):
    sink.script(Answer(400))
    relay = start_relay(rules(sink, "hook"), RELAY_ADMIN_TOKEN=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    event_id = relay.post(inbound("reject me once"))
    relay.finished(event_id)
    did = f"{event_id}:hook"

    assert relay.client.get("/api/dead-letters").status_code == 401
    listed = relay.client.get("/api/dead-letters", headers=auth).json
    assert [item["id"] for item in listed["dead_letters"]] == [did]
    assert relay.client.post(f"/api/dead-letters/{did}/replay").status_code == 401
    answer = relay.client.post(f"/api/dead-letters/{did}/replay", headers=auth)
    assert answer.status_code == 202, answer.json
    first, second = sink.wait_for(2)
    assert first.header("webhook-id") == second.header("webhook-id") == did
    wait_until(lambda: delivered(relay, event_id, "hook"))
    assert relay.client.get(f"/api/dead-letters/{did}", headers=auth).status_code == 404

    assert relay.client.get(f"/api/events/{event_id}").status_code == 401
    (found,) = relay.client.get(f"/api/events/{event_id}", headers=auth).json["events"]
    assert found["routes"] == ["all"] and found["routing"] == "routed"
    (delivery,) = found["deliveries"]
    assert (delivery["state"], delivery["replays"]) == ("delivered", 1)
    assert [a["status"] for a in delivery["attempts"]] == [400, 200]
