"""SMS auto-replies end to end: keywords, cooldown, opt-out, never to ourselves.

A local stand-in for the Webex Connect SMS API answers like the real one (202 with
``messageId``); a real worker runs the rules.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_fixture
from tests.harness import wait_until
from tests.httpsink import Answer

pytestmark = pytest.mark.e2e

SERVICE_KEY = "svc-key-s3cret"
RULES = """
version: 1
destinations:
  help-reply:
    type: sms_reply
    text: "ACME: reply STOP to opt out. You said {{ event.keyword }}."
    cooldown: 1h
  stop-confirm:
    type: sms_reply
    text: "You are unsubscribed. Reply START to resume."
    to_opted_out: true
routes:
  - {name: stop, match: {keyword: [STOP, UNSUBSCRIBE]}, to: [stop-confirm]}
  - {name: help, match: {kind: inbound_message, keyword: [HELP, INFO]}, to: [help-reply]}
"""
ACCEPTED = Answer(
    202,
    {"Content-Type": "application/json"},
    json.dumps({"acceptedTime": "2026-11-27T15:00:00Z", "messageId": "m-1", "correlationId": "c"}),
)


@pytest.fixture
def relay(start_relay, sink):
    sink.default = ACCEPTED
    return start_relay(
        RULES,
        RELAY_WEBEX_API_URL=sink.url("").rstrip("/"),
        RELAY_WEBEX_SERVICE_KEY=SERVICE_KEY,
        RELAY_OWN_NUMBERS="12345",
    )


def sms(sender: str, text: str) -> dict:
    return {**load_fixture("inbound-sms.json"), "oa": sender, "da": "12345", "message": text}


def outcome(relay, payload) -> str:
    event_id = relay.post(payload)
    (end,) = relay.finished(event_id)
    return end["step"] if end["step"] != "skipped" else f"skipped: {end['reason']}"


def test_help_gets_one_reply_in_webex_connect_format(relay, sink):
    event_id = relay.post(sms("447700900001", "help me"))
    relay.finished(event_id)
    (request,) = sink.requests
    assert request.method == "POST" and request.path == "/v1/sms/messages"
    assert request.header("Authorization") == SERVICE_KEY
    assert request.header("Idempotency-Key") == f"{event_id}:help-reply"
    assert request.json() == {
        "from": "12345",
        "to": "+447700900001",
        "content": "ACME: reply STOP to opt out. You said HELP.",
        "contentType": "text",
        "correlationId": event_id,
    }


def test_second_help_inside_the_cooldown_gets_none(relay, sink):
    assert outcome(relay, sms("447700900002", "HELP")) == "delivered"
    assert outcome(relay, sms("447700900002", "help again")) == (
        "skipped: cooldown: this sender got a reply from this destination recently"
    )
    assert outcome(relay, sms("447700900003", "INFO")) == "delivered"
    assert [r.json()["to"] for r in sink.requests] == ["+447700900002", "+447700900003"]


def test_stop_then_help_gets_none_and_start_then_help_gets_one(relay, sink):
    number = "447700900004"
    assert outcome(relay, sms(number, "STOP")) == "delivered"  # the one confirmation
    assert outcome(relay, sms(number, "HELP")) == "skipped: sender opted out"
    start_id = relay.post(sms(number, "START"))
    wait_until(lambda: relay.steps(start_id, "unrouted"))
    assert outcome(relay, sms(number, "HELP please")) == "delivered"
    contents = [r.json()["content"] for r in sink.requests]
    assert contents == [
        "You are unsubscribed. Reply START to resume.",
        "ACME: reply STOP to opt out. You said HELP.",
    ]


def test_opt_out_is_visible_to_rules_and_history(relay):
    event_id = relay.post(sms("447700900005", "Stop!"))
    relay.finished(event_id)
    assert relay.store.event(event_id)["sender_opted_out"] is True


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("12345", "sender is a short code"),
        ("ACME", "sender is not a phone number"),
    ],
)
def test_never_replies_to_short_codes_or_names(relay, sink, sender, reason):
    assert outcome(relay, sms(sender, "HELP")) == f"skipped: {reason}"
    assert sink.requests == []


def test_never_replies_to_one_of_our_own_numbers(start_relay, sink):
    sink.default = ACCEPTED
    relay = start_relay(
        RULES,
        RELAY_WEBEX_API_URL=sink.url("").rstrip("/"),
        RELAY_WEBEX_SERVICE_KEY=SERVICE_KEY,
        RELAY_OWN_NUMBERS="12345,447700900099",
    )
    # one of our numbers texting another (two auto-responders): both sides are ours
    payload = {
        **load_fixture("inbound-sms.json"),
        "oa": "447700900099",
        "da": "12345",
        "message": "HELP",
    }
    assert outcome(relay, payload) == "skipped: sender is one of our own numbers"
    assert sink.requests == []


def test_rejected_reply_is_a_dead_letter_without_the_key(relay, sink):
    sink.script(
        Answer(
            403,
            {"Content-Type": "application/json"},
            '{"code": "7001", "message": "Authentication failed."}',
        )
    )
    event_id = relay.post(sms("447700900006", "HELP"))
    (end,) = relay.finished(event_id)
    assert end["step"] == "dead_lettered"
    letter = relay.store.dead_letters.get(f"{event_id}:help-reply")
    assert "7001" in letter["reason"]
    assert SERVICE_KEY not in json.dumps(letter)
    assert SERVICE_KEY not in json.dumps(relay.store.history(event_id))
    assert SERVICE_KEY not in relay.worker.log_path.read_text()


def test_start_then_stop_back_to_back_leaves_every_number_opted_out(relay, sink):
    """The intake routes many events at once, so a number's START and STOP may be routed in
    either order; the messages' own times decide, and HELP then gets no reply."""
    numbers = [f"4477009{n:05d}" for n in range(60)]
    ids = []
    for number in numbers:
        for text, sent in (
            ("START", "2026-01-01T10:00:00.001Z"),
            ("STOP", "2026-01-01T10:00:00.002Z"),
        ):
            ids.append(
                relay.post({**sms(number, text), "datetime": sent, "tid": f"{number}{text}"})
            )
    for event_id in ids:  # routed: START matches no route, STOP gets its confirmation
        wait_until(lambda event_id=event_id: relay.store.history(event_id), 20)
    wait_until(lambda: len(sink.requests) >= len(numbers), 20)  # every STOP confirmed
    replies_before = len(sink.requests)
    helps = [relay.post({**sms(number, "HELP"), "tid": f"{number}HELP"}) for number in numbers]
    ends = [relay.finished(event_id) for event_id in helps]
    assert {end["reason"] for (end,) in ends} == {"sender opted out"}
    assert len(sink.requests) == replies_before
