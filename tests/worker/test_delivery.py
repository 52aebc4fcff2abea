"""One attempt at one destination, without a worker: rendering, headers, failures."""

from __future__ import annotations

import base64
import hashlib
import hmac

from relay.events import delivery_id
from relay.parsing import build_events
from relay.rules import load_rules_text
from relay.settings import load_settings
from relay.worker.delivery import perform
from tests.conftest import load_fixture

SETTINGS = load_settings({})


def job_for(rules_text: str, destination: str = "hook"):
    ruleset = load_rules_text(rules_text)
    (event,), _ = build_events(load_fixture("inbound-sms.json"), "default", frozenset())
    job = {
        "event": event,
        "route": "all",
        "destination": destination,
        "delivery_id": delivery_id(event["id"], destination),
    }
    return ruleset.destinations[destination], job


def rules(url: str, extra: str) -> str:
    return f"""
version: 1
destinations:
  hook:
    type: http
    url: {url}
    {extra}
routes: [{{name: all, to: [hook]}}]
"""


def test_template_that_fails_at_render_is_permanent(sink):
    destination, job = job_for(rules(sink.url(), 'body: "{{ event.nope }}"'))
    outcome = perform(destination, job, SETTINGS)
    assert outcome.kind == "permanent"
    assert outcome.error.startswith("template error:")
    assert sink.requests == []


def test_template_that_raises_inside_is_permanent_not_a_crash(sink):
    destination, job = job_for(rules(sink.url(), 'body: "{{ 1 // 0 }}"'))
    outcome = perform(destination, job, SETTINGS)
    assert outcome.kind == "permanent"
    assert "ZeroDivisionError" in outcome.error or "division" in outcome.error
    assert sink.requests == []


def test_plain_text_template_body_is_sent_as_text(sink):
    destination, job = job_for(rules(sink.url(), 'body: "SMS from {{ event.sender }}"'))
    assert perform(destination, job, SETTINGS).ok
    (request,) = sink.requests
    assert request.body == b"SMS from 441157070619"
    assert request.header("Content-Type") == "text/plain; charset=utf-8"


def test_signed_delivery_carries_a_verifiable_standard_webhooks_signature(sink):
    destination, job = job_for(rules(sink.url(), "sign: {secret: s3cret}"))
    assert perform(destination, job, SETTINGS).ok
    (request,) = sink.requests
    webhook_id = request.header("webhook-id")
    timestamp = request.header("webhook-timestamp")
    signed = f"{webhook_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(b"s3cret", signed, hashlib.sha256).digest()).decode()
    assert request.header("webhook-signature") == f"v1,{expected}"
    assert webhook_id == job["delivery_id"]
