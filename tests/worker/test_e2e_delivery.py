"""Routing and HTTP delivery end to end: real Redis, a real worker, a real HTTP receiver.

Each test starts its own worker on its own Redis database with the rules it needs
(the ``start_relay`` fixture). The tests whose retries travel through the broker as
Celery tasks run with both brokers (the ``broker`` fixture: the suite's Redis, and
RabbitMQ where reachable); first attempts run in the worker's intake, without the broker.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import load_fixture
from tests.harness import FIXTURES, ROOT, wait_until
from tests.httpsink import Answer

pytestmark = pytest.mark.e2e
URL = "/webhooks/webex-connect"


def http_rules(
    url: str, retry: str = "{attempts: 5, initial: 100ms, max: 200ms}", extra: str = ""
) -> str:
    return f"""
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 1s
    retry: {retry}
    {extra}
routes:
  - name: all
    match: {{}}
    to: [hook]
"""


def inbound(text: str) -> dict:
    return {**load_fixture("inbound-sms.json"), "message": text}


def test_example_rules_send_each_seed_payload_where_they_promise(start_relay, sink):
    rules = (ROOT / "config" / "rules.yaml").read_text()
    relay = start_relay(rules, FAILURES_WEBHOOK_URL=sink.url("/failures"))
    expected = {}
    for path in sorted(FIXTURES.glob("*.json")):
        payload = json.loads(path.read_text())
        event_id = relay.post(payload)
        failed = payload.get("deliveryInfoNotification", {}).get("deliveryInfo", {}).get(
            "deliveryStatus"
        ) in ("Failed", "Un-Delivered")
        expected[event_id] = {"trace", "failures-webhook"} if failed else {"trace"}
    for event_id, destinations in expected.items():
        ends = relay.finished(event_id, len(destinations))
        assert {entry["destination"] for entry in ends} == destinations
        assert all(entry["step"] == "delivered" for entry in ends)
    failures = [ev for ev, dest in expected.items() if "failures-webhook" in dest]
    received = sink.wait_for(len(failures))
    assert sorted(request.json()["id"] for request in received) == sorted(failures)
    assert all(request.path == "/failures" for request in received)


def test_500_500_200_is_three_requests_with_one_webhook_id(broker, start_relay, sink):
    sink.script(Answer(500), Answer(500), Answer(200))
    relay = start_relay(http_rules(sink.url("/hook")), **broker.env)
    event_id = relay.post(inbound("retry me"))
    relay.finished(event_id)
    time.sleep(0.5)  # a fourth request would arrive now if one were coming
    requests = sink.requests
    assert len(requests) == 3
    assert {request.header("webhook-id") for request in requests} == {f"{event_id}:hook"}
    assert all(request.header("User-Agent").startswith("relay/") for request in requests)
    attempts = relay.steps(event_id, "attempt")
    assert [(a["outcome"], a["status"]) for a in attempts] == [
        ("transient", 500),
        ("transient", 500),
        ("ok", 200),
    ]
    assert len(relay.steps(event_id, "delivered")) == 1
    assert relay.store.dead_letters.ids() == []


def test_400_is_one_request_and_a_dead_letter(start_relay, sink):
    sink.script(Answer(400, body="bad field"))
    relay = start_relay(http_rules(sink.url("/hook")))
    event_id = relay.post(inbound("reject me"))
    (end,) = relay.finished(event_id)
    assert end["step"] == "dead_lettered"
    time.sleep(0.5)
    assert len(sink.requests) == 1
    letter = relay.store.dead_letters.get(f"{event_id}:hook")
    assert letter["destination"] == "hook" and letter["route"] == "all"
    assert letter["event"]["id"] == event_id
    assert [(a["outcome"], a["status"]) for a in letter["attempts"]] == [("permanent", 400)]
    assert "HTTP 400" in letter["reason"]


def test_transient_failures_until_attempts_run_out_are_dead_lettered(broker, start_relay, sink):
    sink.script(*[Answer(503)] * 3)
    rules = http_rules(sink.url("/hook"), retry="{attempts: 3, initial: 50ms}")
    relay = start_relay(rules, **broker.env)
    event_id = relay.post(inbound("always down"))
    (end,) = relay.finished(event_id)
    assert end["step"] == "dead_lettered"
    assert "gave up after 3 attempts" in end["reason"]
    letter = relay.store.dead_letters.get(f"{event_id}:hook")
    assert [a["status"] for a in letter["attempts"]] == [503, 503, 503]
    assert len(sink.requests) == 3


def test_a_destination_that_does_not_answer_in_time_is_retried(start_relay, sink):
    sink.script(Answer(200, delay=3.0), Answer(200))
    relay = start_relay(http_rules(sink.url("/slow")))
    event_id = relay.post(inbound("slow"))
    relay.finished(event_id)
    attempts = relay.steps(event_id, "attempt")
    assert [a["outcome"] for a in attempts] == ["transient", "ok"]
    assert "timeout" in attempts[0]["error"]
    assert len(sink.requests) == 2


def test_retry_after_is_honoured(start_relay, sink):
    sink.script(Answer(429, {"Retry-After": "1"}), Answer(200))
    relay = start_relay(http_rules(sink.url("/hook")))
    event_id = relay.post(inbound("rate limited"))
    relay.finished(event_id)
    first, second = sink.requests
    assert second.at - first.at >= 0.95


def test_retry_wait_longer_than_visibility_timeout_sends_once(start_relay, sink):
    """The Celery-on-Redis trap: an ETA past the visibility timeout is redelivered.
    Redis broker only: RabbitMQ has no visibility timeout (it redelivers an unacknowledged
    message only when its consumer's connection closes)."""
    sink.script(Answer(503, {"Retry-After": "5"}), Answer(200))
    relay = start_relay(http_rules(sink.url("/hook")), RELAY_VISIBILITY_TIMEOUT="2s")
    event_id = relay.post(inbound("long wait"))
    relay.finished(event_id)
    time.sleep(4)  # two more visibility timeouts: a redelivered copy would arrive now
    assert [request.header("webhook-id") for request in sink.requests] == [f"{event_id}:hook"] * 2
    assert len(relay.steps(event_id, "delivered")) == 1
    assert sink.requests[1].at - sink.requests[0].at >= 4.9
    assert "duplicate task message" not in relay.worker.log_path.read_text()


def test_unrouted_event_is_recorded(start_relay, sink):
    rules = http_rules(sink.url("/hook")).replace("match: {}", "match: {kind: delivery_receipt}")
    relay = start_relay(rules)
    event_id = relay.post(inbound("nobody wants me"))
    wait_until(lambda: relay.steps(event_id, "unrouted"))
    assert sink.requests == []


def test_continue_sends_to_every_matching_route_once_per_destination(start_relay, sink):
    rules = f"""
version: 1
destinations:
  a: {{type: http, url: "{sink.url("/a")}"}}
  b: {{type: http, url: "{sink.url("/b")}", body: raw}}
  c: {{type: http, url: "{sink.url("/c")}", method: PUT,
      headers: {{X-Kind: "{{{{ event.kind }}}}"}},
      body: '{{"text": {{{{ event.text | tojson }}}}, "who": "{{{{ event.sender | mask }}}}"}}'}}
routes:
  - {{name: first, match: {{keyword: help}}, to: [a, b], continue: true}}
  - {{name: second, match: {{kind: inbound_message}}, to: [b, c]}}
  - {{name: never, match: {{}}, to: [a]}}
"""
    relay = start_relay(rules)
    payload = inbound("Help me")
    event_id = relay.post(payload)
    relay.finished(event_id, 3)
    by_path = {request.path: request for request in sink.wait_for(3)}
    assert sorted(by_path) == ["/a", "/b", "/c"]
    assert by_path["/a"].json()["id"] == event_id
    assert by_path["/b"].json() == payload
    assert by_path["/c"].method == "PUT"
    assert by_path["/c"].header("X-Kind") == "inbound_message"
    assert by_path["/c"].json() == {"text": "Help me", "who": "********0619"}
    assert by_path["/c"].header("Content-Type") == "application/json"
    routed = relay.steps(event_id, "routed")[0]
    assert routed["routes"] == ["first", "second"]
