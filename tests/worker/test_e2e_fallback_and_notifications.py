"""Fallbacks and grouped notifications end to end: real workers, real Redis, local HTTP
receivers standing in for the internal apps and for Slack."""

from __future__ import annotations

import math
import time
import uuid

import pytest
import requests
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from relay.cli import main
from relay.cli.embedded import free_port
from relay.ops.history import timeline
from tests.conftest import load_fixture
from tests.harness import wait_until
from tests.httpsink import Answer, HttpSink

pytestmark = pytest.mark.e2e

DELIVERED = "receipt-delivered.json"
FAILED = "receipt-failed-invalid-address.json"
SLACK_OK = Answer(200, {"Content-Type": "text/plain"}, "ok")


def receipt(fixture: str) -> dict:
    """A receipt of its own (a new transid: never a duplicate of another)."""
    payload = load_fixture(fixture)
    payload["deliveryInfoNotification"]["transid"] = str(uuid.uuid4())
    return payload


@pytest.fixture
def down():
    """An internal app that is down: 503 to everything."""
    with HttpSink(Answer(503, body="maintenance")) as server:
        yield server


FALLBACK_RULES = """
version: 1
destinations:
  crm-up: {{type: http, url: "{up}", fallback: ops-slack}}
  crm-down:
    type: http
    url: "{down}"
    retry: {{attempts: 2, initial: 100ms, max: 100ms}}
    fallback: ops-slack
  ops-slack:
    type: slack
    webhook_url: "{slack}"
    text: >-
      {{{{ failure.destination }}}} gave up on {{{{ event.id }}}} after
      {{{{ failure.attempts }}}} attempts: {{{{ failure.last_error }}}}
routes:
  - {{name: good, match: {{status: Delivered}}, to: [crm-up]}}
  - {{name: bad, match: {{status: Failed}}, to: [crm-down]}}
"""


def test_the_fallback_gets_exactly_the_dead_lettered_events_with_the_failure(
    start_relay, sink, down
):
    sink.default = SLACK_OK
    rules = FALLBACK_RULES.format(
        up=sink.url("/crm"), down=down.url("/crm"), slack=sink.url("/services/T0/B0/x")
    )
    relay = start_relay(rules)
    good = [relay.post(receipt(DELIVERED)) for _ in range(5)]
    bad = [relay.post(receipt(FAILED)) for _ in range(5)]
    for event_id in good:
        assert [e["step"] for e in relay.finished(event_id)] == ["delivered"]
    for event_id in bad:  # crm-down dead-lettered, then the fallback delivered
        assert [e["step"] for e in relay.finished(event_id, 2)] == ["dead_lettered", "delivered"]
    slack = [r for r in sink.wait_for(10) if r.path == "/services/T0/B0/x"]
    texts = sorted(r.json()["text"] for r in slack)
    assert texts == sorted(
        f"crm-down gave up on {event_id} after 2 attempts: "
        "gave up after 2 attempts: HTTP 503: maintenance"
        for event_id in bad
    )
    assert len(down.requests) == 10  # 2 attempts each, then never again

    # the history shows the hand-over; the fallback delivery has its own id
    event_id = bad[0]
    (handed,) = relay.steps(event_id, "fallback")
    assert handed["destination"] == "ops-slack" and handed["fallback_of"] == "crm-down"
    assert handed["delivery_id"] == f"{event_id}:crm-down:fallback"
    item = timeline(relay.store.event(event_id), relay.store.history(event_id))
    states = {(d["destination"], d["delivery_id"], d["state"]) for d in item["deliveries"]}
    assert states == {
        ("crm-down", f"{event_id}:crm-down", "dead_lettered"),
        ("ops-slack", f"{event_id}:crm-down:fallback", "delivered"),
    }
    shown = CliRunner().invoke(main, ["events", "show", event_id], env=relay.env)
    assert shown.exit_code == 0, shown.output
    assert "ops-slack fallback for crm-down: gave up after 2 attempts: HTTP 503" in shown.output
    assert "final: crm-down dead_lettered, ops-slack delivered" in shown.output


CHAIN_RULES = """
version: 1
destinations:
  crm:
    type: http
    url: "{down}"
    retry: {{attempts: 1}}
    fallback: ops-slack
  ops-slack:
    type: slack
    webhook_url: "{slack}"
    text: "{{{{ failure.destination }}}}: {{{{ failure.last_error }}}}"
    retry: {{attempts: 1}}
    fallback: last-resort
  last-resort: {{type: http, url: "{last}"}}
routes:
  - {{name: all, match: {{status: Failed}}, to: [crm]}}
"""


def test_a_failing_fallback_does_not_chain(start_relay, sink, down):
    sink.default = Answer(404, {"Content-Type": "text/plain"}, "channel_not_found")
    rules = CHAIN_RULES.format(
        down=down.url("/crm"), slack=sink.url("/slack"), last=sink.url("/last")
    )
    relay = start_relay(rules)
    events = [relay.post(receipt(FAILED)) for _ in range(3)]
    for event_id in events:
        ends = relay.finished(event_id, 2)
        assert [e["step"] for e in ends] == ["dead_lettered", "dead_lettered"]
        assert [e["destination"] for e in ends] == ["crm", "ops-slack"]
    wait_until(lambda: relay.store.dead_letters.count() == 6)
    time.sleep(1.0)  # time enough for a chained delivery, were there one
    assert [r.path for r in sink.requests] == ["/slack"] * 3
    assert relay.store.dead_letters.count() == 6
    record = relay.store.dead_letters.get(f"{events[0]}:crm:fallback")
    assert record is not None and record["destination"] == "ops-slack"
    assert record["failure"]["destination"] == "crm" and record["failure"]["attempts"] == 1


NOTIFY_RULES = """
version: 1
destinations:
  crm: {{type: http, url: "{down}", retry: {{attempts: 1}}}}
  ops-slack:
    type: slack
    webhook_url: "{slack}"
    text: unused by notifications
  ops-hook: {{type: http, url: "{hook}"}}
routes:
  - {{name: all, to: [crm]}}
notifications:
  - name: delivery-trouble
    on: [dead_letter]
    group_by: [destination]
    group_wait: 1s
    group_interval: 3s
    to: [ops-slack, ops-hook]
"""
GROUP_WAIT, GROUP_INTERVAL = 1.0, 3.0


def test_500_dead_letters_in_10s_make_one_message_then_one_per_interval(start_relay, sink, down):
    sink.default = SLACK_OK
    rules = NOTIFY_RULES.format(
        down=down.url("/crm"), slack=sink.url("/slack"), hook=sink.url("/hook")
    )
    relay = start_relay(rules)
    started, started_at = time.time(), time.monotonic()
    for second in range(10):  # 50 a second for 10 s
        for _ in range(50):
            relay.post(receipt(FAILED))
        time.sleep(max(0.0, started + second + 1 - time.time()))
    wait_until(lambda: relay.store.dead_letters.count() == 500, timeout=60)
    last_dead = time.time()

    def reported() -> int:
        return sum(r.json()["counts"]["dead_letter"] for r in sink.requests if r.path == "/hook")

    wait_until(lambda: reported() == 500, timeout=GROUP_INTERVAL + 10)
    time.sleep(GROUP_INTERVAL + 1)  # no message more, nothing counted twice
    assert reported() == 500
    hooks = [r for r in sink.requests if r.path == "/hook"]
    slack = [r for r in sink.requests if r.path == "/slack"]
    assert len(slack) == len(hooks)
    # the first dead letter comes within a moment of the first post: the first message
    # follows it by group_wait and the flusher's half-second tick, a few seconds at most
    assert hooks[0].at - started_at <= GROUP_WAIT + 4
    gaps = [later.at - earlier.at for earlier, later in zip(hooks, hooks[1:], strict=False)]
    assert all(gap >= GROUP_INTERVAL - 0.1 for gap in gaps), gaps
    most = math.ceil((last_dead - started) / GROUP_INTERVAL) + 1
    assert 2 <= len(hooks) <= most, (len(hooks), most)
    assert all(r.json()["labels"] == {"destination": "crm"} for r in hooks)
    first = slack[0].json()["text"]
    assert first.startswith("relay: delivery-trouble · destination crm — ")
    assert "dead_letter crm (route all) event " in first


UNDELIVERABLE_RULES = """
version: 1
destinations:
  crm: {{type: http, url: "{down}", retry: {{attempts: 1}}}}
  ops-hook: {{type: http, url: "{hook}"}}
routes:
  - {{name: all, to: [crm]}}
notifications:
  - name: trouble
    on: [dead_letter]
    group_wait: 500ms
    group_interval: 2s
    to: [ops-hook]
"""


def _scrape(port: int) -> dict[tuple, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_an_undeliverable_notification_is_counted_and_never_notified_about(start_relay, sink, down):
    sink.default = Answer(500, body="alert hook down")
    port = free_port()
    rules = UNDELIVERABLE_RULES.format(down=down.url("/crm"), hook=sink.url("/alerts"))
    relay = start_relay(rules, RELAY_WORKER_METRICS_PORT=str(port))
    events = [relay.post(receipt(FAILED)) for _ in range(3)]
    for event_id in events:
        relay.finished(event_id)
    dropped = (
        "relay_alert_messages_dropped_total",
        (("destination", "ops-hook"), ("notification", "trouble")),
    )
    scrape = wait_until(lambda: (s := _scrape(port)).get(dropped) and s, timeout=10)
    assert scrape[dropped] == 1  # one message for the group, tried twice, then dropped
    assert len(sink.requests) == 2
    # nothing about it, ever: no alert, no dead letter, no message in the next intervals
    time.sleep(2 * 2 + 1)
    assert len(sink.requests) == 2
    assert relay.store.dead_letters.count() == 3  # crm's, and nothing else
    later = _scrape(port)
    assert later[dropped] == 1
    sent = ("relay_alert_messages_sent_total", dropped[1])
    assert later.get(sent, 0) == 0
    alerts = ("relay_alerts_total", (("kind", "dead_letter"),))
    assert later[alerts] == 3


CIRCUIT_RULES = """
version: 1
destinations:
  crm:
    type: http
    url: "{crm}"
    retry: {{attempts: 5, initial: 100ms, max: 100ms}}
    concurrency: 1
    circuit_breaker: {{failures: 2, cooldown: 1500ms}}
  ops-hook: {{type: http, url: "{hook}"}}
routes:
  - {{name: all, to: [crm]}}
notifications:
  - name: circuits
    on: [circuit_open, circuit_closed]
    group_by: [destination]
    group_wait: 200ms
    group_interval: 3s
    to: [ops-hook]
"""


def test_a_flapping_circuit_is_notified_once_per_group_interval(start_relay, sink):
    with HttpSink() as hooks:
        failing = Answer(503)
        relay = start_relay(CIRCUIT_RULES.format(crm=sink.url("/crm"), hook=hooks.url("/a")))
        for _ in range(2):  # open (two failures), then the probe closes it: twice
            sink.script(failing, failing)
            event_id = relay.post(receipt(FAILED))
            assert [e["step"] for e in relay.finished(event_id)] == ["delivered"]
        assert [status for _, status in sink.answered()] == [503, 503, 200] * 2

        def counted() -> dict[str, int]:
            total: dict[str, int] = {}
            for request in hooks.requests:
                for kind, count in request.json()["counts"].items():
                    total[kind] = total.get(kind, 0) + count
            return total

        wait_until(lambda: counted() == {"circuit_open": 2, "circuit_closed": 2}, timeout=10)
        time.sleep(3.5)  # no message more
        messages = hooks.requests
        assert counted() == {"circuit_open": 2, "circuit_closed": 2}
        # the first open goes out after group_wait (the probe comes only after the 1.5 s
        # cooldown); what follows waits for the interval: 4 alerts in about 3.5 s make
        # 2 or 3 messages, an interval apart, not 4
        assert messages[0].json()["counts"] == {"circuit_open": 1}
        assert 2 <= len(messages) <= 3
        gaps = [b.at - a.at for a, b in zip(messages, messages[1:], strict=False)]
        assert all(gap >= 3.0 - 0.1 for gap in gaps), gaps
