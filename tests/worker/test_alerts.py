"""Grouped notifications in process: real Redis, a real HTTP receiver standing in for
Slack and for an internal hook; time moved by passing ``now`` to the flusher."""

from __future__ import annotations

import json
import threading
import time

import pytest

from relay import metrics
from relay.events import new_alert_group
from relay.ops.broker import make_celery
from relay.rules import load_rules_text
from relay.rules.model import NOTIFICATION_NAMES
from relay.rules.reloader import StaticRules
from relay.settings import load_settings
from relay.state import Store, connect
from relay.state import keys as state_keys
from relay.state.pending import NODE_TTL
from relay.worker import alerts
from relay.worker.runtime import Runtime
from relay.worker.sweeper import sweep_once
from tests.httpsink import Answer

RULES = """
version: 1
destinations:
  crm: {{type: http, url: "{hook}"}}
  billing: {{type: http, url: "{hook}"}}
  ops-slack:
    type: slack
    webhook_url: "{slack}"
    text: unused by notifications
  ops-hook: {{type: http, url: "{hook}"}}
routes: [{{name: all, to: [crm, billing]}}]
notifications:
  - name: trouble
    on: [dead_letter, circuit_open, circuit_closed]
    group_by: [destination]
    group_wait: 1s
    group_interval: 3s
    to: [{to}]
{extra}
"""


@pytest.fixture
def rig(redis_server, sink):
    sink.default = Answer(200, {"Content-Type": "text/plain"}, "ok")

    def make(to: str = "ops-hook", extra: str = "") -> Runtime:
        text = RULES.format(hook=sink.url("/hook"), slack=sink.url("/slack"), to=to, extra=extra)
        settings = load_settings({"RELAY_REDIS_URL": redis_server.url})
        store = Store(connect(redis_server.url), 3600, 3600, grace=60, node="test-node")
        return Runtime(settings, store, StaticRules(load_rules_text(text)), _no_schedule, 30.0)

    return make


def _no_schedule(job, countdown):
    raise AssertionError("notifications are never deliveries")


def _dead(runtime: Runtime, destination: str, n: int, error: str = "HTTP 500") -> None:
    labels = {"destination": destination, "route": "all"}
    details = {"event_id": f"E{n}", "delivery_id": f"E{n}:{destination}", "error": error}
    alerts.emit(runtime, "dead_letter", labels, details)


def _counter(metric, *labels: str) -> float:
    return metric.labels(*labels)._value.get()


def test_500_dead_letters_make_one_message_after_group_wait_then_one_per_interval(rig, sink):
    runtime = rig()
    start = time.time()
    for n in range(500):
        _dead(runtime, "crm", n)
    assert alerts.flush_once(runtime, now=start + 0.5) == 0  # still gathering
    assert sink.requests == []
    assert alerts.flush_once(runtime, now=start + 1.1) == 1
    (message,) = sink.wait_for(1)
    body = message.json()
    assert body["counts"] == {"dead_letter": 500} and body["total"] == 500
    assert body["labels"] == {"destination": "crm"}
    assert [e["event_id"] for e in body["examples"]] == ["E499", "E498", "E497", "E496", "E495"]
    assert "500 dead_letter" in body["text"] and "… and 495 more" in body["text"]
    # new alerts within the interval wait for it: the next message 3 s after the first
    for n in range(500, 520):
        _dead(runtime, "crm", n)
    sent = float(runtime.store.alerts.redis.hget("relay:alert:" + _group("crm"), "sent"))
    assert alerts.flush_once(runtime, now=sent + 2.9) == 0
    assert alerts.flush_once(runtime, now=sent + 3.0) == 1
    assert sink.wait_for(2)[1].json()["counts"] == {"dead_letter": 20}
    # nothing new: no message, however long it waits
    assert alerts.flush_once(runtime, now=sent + 60) == 0
    assert len(sink.requests) == 2


def _group(destination: str) -> str:
    return alerts.group_id("trouble", {"destination": destination})


def test_groups_follow_group_by(rig, sink):
    runtime = rig()
    for n in range(3):
        _dead(runtime, "crm", n)
    _dead(runtime, "billing", 9)
    assert alerts.flush_once(runtime, now=time.time() + 1.5) == 2
    bodies = sorted((r.json() for r in sink.wait_for(2)), key=lambda b: b["total"])
    assert [(b["labels"], b["total"]) for b in bodies] == [
        ({"destination": "billing"}, 1),
        ({"destination": "crm"}, 3),
    ]


def test_group_by_nothing_is_one_group_and_kind_splits_them(rig, sink):
    extra = (
        "  - name: all-in-one\n    on: [dead_letter, circuit_open]\n    group_by: []\n"
        "    group_wait: 1s\n    group_interval: 3s\n    to: [ops-hook]\n"
        "  - name: by-kind\n    on: [dead_letter, circuit_open]\n    group_by: [kind]\n"
        "    group_wait: 1s\n    group_interval: 3s\n    to: [ops-hook]\n"
    )
    runtime = rig(extra=extra)
    _dead(runtime, "crm", 1)
    _dead(runtime, "billing", 2)
    alerts.emit(runtime, "circuit_open", {"destination": "crm"}, {"failures": 5})
    assert alerts.flush_once(runtime, now=time.time() + 1.5) == 2 + 1 + 2  # trouble: 2 groups
    bodies = [r.json() for r in sink.wait_for(5)]
    mine = {}
    for body in bodies:
        mine.setdefault(body["notification"], []).append((body["labels"], body["counts"]))
    assert mine["all-in-one"] == [({}, {"dead_letter": 2, "circuit_open": 1})]
    assert sorted(mine["by-kind"], key=str) == sorted(
        [
            ({"kind": "dead_letter"}, {"dead_letter": 2}),
            ({"kind": "circuit_open"}, {"circuit_open": 1}),
        ],
        key=str,
    )


def test_circuit_alerts_are_sent_once_per_group_interval(rig, sink):
    runtime = rig()
    start = time.time()
    alerts.emit(runtime, "circuit_open", {"destination": "crm"}, {"failures": 5})
    assert alerts.flush_once(runtime, now=start + 1.1) == 1
    # the circuit flaps: closed, open, closed within the interval → one message after it
    for kind in ("circuit_closed", "circuit_open", "circuit_closed"):
        alerts.emit(runtime, kind, {"destination": "crm"})
    sent = float(runtime.store.alerts.redis.hget("relay:alert:" + _group("crm"), "sent"))
    assert alerts.flush_once(runtime, now=sent + 2.0) == 0
    assert alerts.flush_once(runtime, now=sent + 3.0) == 1
    first, second = (r.json() for r in sink.wait_for(2))
    assert first["counts"] == {"circuit_open": 1}
    assert second["counts"] == {"circuit_closed": 2, "circuit_open": 1}
    assert [e["kind"] for e in second["examples"]] == [
        "circuit_closed",
        "circuit_open",
        "circuit_closed",
    ]


def test_two_flushers_never_send_a_group_twice(rig, sink):
    runtime = rig()
    for n in range(200):
        _dead(runtime, f"dest-{n}", n)  # 200 groups
    later = time.time() + 1.5
    claimed: list[list[str]] = [[], []]

    def claim(i: int) -> None:
        while True:
            got = runtime.store.alerts.claim_due(now=later, limit=7)
            if not got:
                return
            claimed[i] += [group["group"] for group in got]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(claimed[0]) & set(claimed[1])
    assert len(claimed[0]) + len(claimed[1]) == 200


def test_a_message_claimed_by_a_worker_that_died_is_sent_by_another(rig, redis_server, sink):
    """Claimed, then its worker dies before sending: the sweeper that takes the dead node's
    work over puts the message back into its group (counts, examples, its previous time),
    and the next flush sends it, with the alerts that came meanwhile."""
    runtime = rig()
    start = time.time()
    for n in range(3):
        _dead(runtime, "crm", n)
    (claimed,) = runtime.store.alerts.claim_due(now=start + 1.1)  # ... and the node dies
    assert claimed["counts"] == {"dead_letter": 3}
    _dead(runtime, "crm", 3)  # after the claim: the group's next message
    survivor = Store(connect(redis_server.url), 3600, 3600, grace=60, node="survivor")
    runtime.store.pending.heartbeat(now=start - NODE_TTL - 1)  # silent since
    settings = load_settings({"RELAY_REDIS_URL": redis_server.url})
    sweep_once(make_celery(settings), survivor)
    assert runtime.store.client.exists(state_keys.alerts_claimed("test-node")) == 0
    rescued = Runtime(settings, survivor, runtime.rules, _no_schedule, 30.0)
    assert alerts.flush_once(rescued, now=time.time()) == 1  # due at once, not in 3 s
    (message,) = sink.wait_for(1)
    body = message.json()
    assert body["counts"] == {"dead_letter": 4}
    assert [e["event_id"] for e in body["examples"]] == ["E3", "E2", "E1", "E0"]
    assert alerts.flush_once(rescued, now=time.time() + 10) == 0  # sent once


def test_a_message_sent_is_no_longer_held(rig):
    runtime = rig()
    _dead(runtime, "crm", 1)
    assert alerts.flush_once(runtime, now=time.time() + 1.1) == 1
    assert runtime.store.client.hlen(state_keys.alerts_claimed("test-node")) == 0
    assert runtime.store.alerts.release("test-node") == 0


def test_the_slack_message_is_escaped_and_a_template_replaces_the_default(rig, sink):
    runtime = rig(to="ops-slack")
    _dead(runtime, "crm", 1, error="HTTP 400: <!channel> & <https://evil|click>")
    alerts.flush_once(runtime, now=time.time() + 1.5)
    (message,) = sink.wait_for(1)
    assert message.path == "/slack"
    text = message.json()["text"]
    assert text.startswith("relay: trouble · destination crm — 1 dead_letter\n")
    assert "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;" in text and "<!" not in text
    extra = (
        "  - name: custom\n    on: [dead_letter]\n    to: [ops-slack]\n    group_wait: 1s\n"
        '    template: "{{ total }} × {{ labels.destination }}: {{ examples[0].error }}"\n'
    )
    runtime = rig(to="ops-slack", extra=extra)
    runtime.store.alerts.redis.flushdb()
    _dead(runtime, "crm", 2, error="<b>")
    alerts.flush_once(runtime, now=time.time() + 1.5)
    texts = [r.json()["text"] for r in sink.wait_for(3)[1:]]
    assert "1 × crm: &lt;b&gt;" in texts


def test_an_undeliverable_notification_is_counted_and_never_notified_about(rig, sink):
    runtime = rig()
    sink.default = Answer(500, body="down")
    sent = _counter(metrics.m().alert_messages_sent, "trouble", "ops-hook")
    dropped = _counter(metrics.m().alert_messages_dropped, "trouble", "ops-hook")
    _dead(runtime, "crm", 1)
    assert alerts.flush_once(runtime, now=time.time() + 1.5) == 1
    assert len(sink.wait_for(2)) == 2  # a transient failure: tried twice, then dropped
    assert _counter(metrics.m().alert_messages_dropped, "trouble", "ops-hook") == dropped + 1
    assert _counter(metrics.m().alert_messages_sent, "trouble", "ops-hook") == sent
    # nothing about it anywhere: no alert recorded, no dead letter, no message later
    redis = runtime.store.alerts.redis
    assert redis.zcard("relay:alerts:due") == 0
    assert runtime.store.dead_letters.count() == 0
    assert alerts.flush_once(runtime, now=time.time() + 3600) == 0
    time.sleep(0.2)
    assert len(sink.requests) == 2


def test_a_template_that_fails_to_render_drops_the_message(rig, sink):
    extra = (
        "  - name: broken\n    on: [dead_letter]\n    to: [ops-hook]\n    group_wait: 1s\n"
        '    template: "{{ labels.nothing.here }}"\n'
    )
    runtime = rig(extra=extra)
    dropped = _counter(metrics.m().alert_messages_dropped, "broken", "ops-hook")
    _dead(runtime, "crm", 1)
    alerts.flush_once(runtime, now=time.time() + 1.5)
    assert _counter(metrics.m().alert_messages_dropped, "broken", "ops-hook") == dropped + 1
    assert [r.json()["notification"] for r in sink.wait_for(1)] == ["trouble"]


def test_emit_never_raises_when_redis_is_away(rig, caplog):
    runtime = rig()
    runtime.store.alerts.redis.connection_pool.connection_kwargs["port"] = 1
    runtime.store.alerts.redis.connection_pool.disconnect()
    alerts.emit(runtime, "dead_letter", {"destination": "crm"}, {})
    assert "not recorded" in caplog.text


def test_json_of_the_hook_message_is_the_template_context(rig, sink):
    runtime = rig()
    _dead(runtime, "crm", 7, error="x" * 1000)
    alerts.flush_once(runtime, now=time.time() + 1.5)
    (message,) = sink.wait_for(1)
    body = json.loads(message.body)
    assert set(body) == {
        "notification",
        "labels",
        "counts",
        "total",
        "examples",
        "first",
        "previous",
        "text",
    }
    (example,) = body["examples"]
    assert example["error"] == "x" * 299 + "…"
    assert example["destination"] == "crm" and example["route"] == "all"
    assert body["previous"] is None and body["first"].endswith("Z")


def test_the_names_a_message_template_sees_are_those_rules_check_allows():
    group = new_alert_group(
        "g", "trouble", {"destination": "crm"}, {"dead_letter": 1}, [], 0.0, None
    )
    assert set(alerts.message_context(group)) == set(NOTIFICATION_NAMES)
