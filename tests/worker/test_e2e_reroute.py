"""Search, re-route and rules diff end to end: real Redis, a real worker delivering to a
real local HTTP receiver, the admin API and the `relay` command run as an operator runs it.
"""

from __future__ import annotations

import json

import pytest

from tests.cli.test_dlq_and_events_commands import inbound, relay_cli, rules
from tests.harness import wait_until
from tests.httpsink import Answer

pytestmark = pytest.mark.e2e
TOKEN = "e2e-admin-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def state(relay, event_id: str) -> str | None:
    return relay.store.index.state(event_id)


def search(relay, query: str) -> list[str]:
    answer = relay.client.get(f"/api/events?{query}", headers=AUTH)
    assert answer.status_code == 200, answer.json
    return [item["id"] for item in answer.json["events"]]


def test_search_state_follows_real_deliveries_and_a_replay(start_relay, sink):
    sink.script(Answer(400, body="bad field"))  # the first request fails for good
    relay = start_relay(rules(sink, "hook"), RELAY_ADMIN_TOKEN=TOKEN)
    dead = relay.post(inbound("first"))
    relay.finished(dead)
    fine = relay.post(inbound("second"))
    relay.finished(fine)
    assert search(relay, "state=dead") == [dead]
    assert search(relay, "state=delivered") == [fine]
    assert search(relay, "destination=hook&keyword=FIRST") == [dead]

    replay = relay.client.post(f"/api/dead-letters/{dead}:hook/replay", headers=AUTH)
    assert replay.status_code == 202
    wait_until(lambda: state(relay, dead) == "delivered")
    assert search(relay, "state=delivered") == [fine, dead]
    assert search(relay, "state=dead") == []


def test_reroute_sends_again_with_a_new_delivery_id_and_history_shows_both(start_relay, sink):
    relay = start_relay(rules(sink, "hook"), RELAY_ADMIN_TOKEN=TOKEN)
    event_id = relay.post(inbound("route me twice"))
    relay.finished(event_id)

    answer = relay.client.post(f"/api/events/{event_id}/reroute", headers=AUTH)
    assert answer.status_code == 202, answer.json
    (item,) = answer.json["rerouted"]
    assert item["delivery_ids"] == [f"{event_id}:hook~2"]
    first, second = sink.wait_for(2)
    assert first.header("webhook-id") == f"{event_id}:hook"
    assert second.header("webhook-id") == f"{event_id}:hook~2"  # a new delivery
    assert first.json()["id"] == second.json()["id"] == event_id  # of the same event
    relay.finished(event_id, 2)
    wait_until(lambda: state(relay, event_id) == "delivered")
    wait_until(lambda: relay.store.pending.count() == 0)  # the new delivery is settled

    (timeline,) = relay.client.get(f"/api/events/{event_id}", headers=AUTH).json["events"]
    steps = [entry["step"] for entry in timeline["history"]]
    assert steps == [
        "received",
        "routed",
        "attempt",
        "delivered",
        "rerouted",
        "attempt",
        "delivered",
    ]
    assert [(d["delivery_id"], d["state"]) for d in timeline["deliveries"]] == [
        (f"{event_id}:hook", "delivered"),
        (f"{event_id}:hook~2", "delivered"),
    ]

    shown = relay_cli(relay, "events", "show", event_id)
    assert "re-routed (rules " in shown.stdout and "all → hook" in shown.stdout


def test_reroute_from_the_command_line_uses_the_rules_file_in_force(start_relay, sink, tmp_path):
    relay = start_relay(rules(sink, "hook"))
    event_id = relay.post(inbound("to the new place"))
    relay.finished(event_id)
    # the file changes: the command loads it; the worker reloads it (hot reload)
    (tmp_path / "rules.yaml").write_text(rules(sink, "hook", "audit"))
    wait_until(lambda: b"rules reloaded" in relay.worker.log_path.read_bytes())
    done = relay_cli(relay, "events", "reroute", event_id, "--json")
    assert done.returncode == 0, done.stderr
    (item,) = json.loads(done.stdout)["rerouted"]
    assert item["destinations"] == ["hook", "audit"]
    relay.finished(event_id, 3)
    paths = sorted(request.path for request in sink.wait_for(3))
    assert paths == ["/audit", "/hook", "/hook"]
    listed = relay_cli(relay, "events", "list", "--destination", "audit", "--json")
    assert [e["id"] for e in json.loads(listed.stdout)["events"]] == [event_id]

    missing = relay_cli(relay, "events", "reroute", "01UNKNOWN")
    assert missing.returncode == 1 and "no event '01UNKNOWN'" in missing.stderr


def test_events_list_and_rules_diff_on_real_traffic(start_relay, sink, tmp_path):
    relay = start_relay(rules(sink, "hook"))
    ids = [relay.post(inbound(word)) for word in ("alpha", "beta", "gamma")]
    for event_id in ids:
        relay.finished(event_id)

    # newest first: by accept time (ms), then id (two posts may share a millisecond, and
    # ids made in the same one are not in the order of their posts)
    newest = sorted(ids, key=lambda i: (relay.store.event(i)["received_at"], i), reverse=True)
    table = relay_cli(relay, "events", "list", "--limit", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "ACCEPTED", "KIND", "WHAT", "STATE", "DESTINATIONS"]
    assert [line.split()[0] for line in lines[1:3]] == newest[:2]
    assert lines[3].startswith("more: --cursor ")
    cursor = lines[3].split()[-1]
    rest = relay_cli(relay, "events", "list", "--limit", "2", "--cursor", cursor, "--json")
    assert [e["id"] for e in json.loads(rest.stdout)["events"]] == newest[2:]
    bad = relay_cli(relay, "events", "list", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr

    same = tmp_path / "same.yaml"
    same.write_text(rules(sink, "hook"))
    unchanged = relay_cli(relay, "rules", "diff", str(same), "--fail-on-change")
    assert unchanged.returncode == 0, unchanged.stderr
    assert "3 event(s) of the last 24h examined" in unchanged.stdout
    assert "0 would change" in unchanged.stdout

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(
        rules(sink, "hook", "crm-v2").replace("match: {}", "match: {keyword: [BETA, GAMMA]}")
    )
    changed = relay_cli(relay, "rules", "diff", str(candidate), "--since", "1h")
    assert changed.returncode == 0, changed.stderr  # no --fail-on-change: informative only
    assert "3 would change" in changed.stdout
    assert "  2 events: hook → hook, crm-v2" in changed.stdout
    assert "  1 event: hook → nothing" in changed.stdout
    failing = relay_cli(relay, "rules", "diff", str(candidate), "--json", "--fail-on-change")
    assert failing.returncode == 1
    body = json.loads(failing.stdout)
    assert [change["count"] for change in body["changes"]] == [2, 1]
    assert sorted(body["changes"][0]["event_ids"]) == sorted(ids[1:])
    assert len(sink.requests) == 3  # a diff sends nothing

    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nroutes:\n  - name: a\n    to: [nowhere]\n")
    refused = relay_cli(relay, "rules", "diff", str(broken))
    assert refused.returncode == 2
    assert f"{broken}:4" in refused.stderr
