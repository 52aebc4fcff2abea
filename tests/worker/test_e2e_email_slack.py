"""Email and Slack destinations end to end: a real worker, a real SMTP server (aiosmtpd),
a local stand-in for Slack answering in Slack's formats."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_fixture
from tests.httpsink import Answer
from tests.smtpserver import SmtpServer

pytestmark = pytest.mark.e2e

EMAIL_RULES = """
version: 1
destinations:
  oncall:
    type: email
    to: [oncall@example.com]
    cc: [team@example.com]
    subject: "SMS failure {{ event.code }} {{ event.code_description }}"
    body: "Receipt for {{ event.destination | mask }}: {{ event.status }}"
    retry: {attempts: 3, initial: 100ms, max: 200ms}
routes:
  - {name: failures, match: {status: [Failed, Un-Delivered]}, to: [oncall]}
"""
FAILED = "receipt-failed-invalid-address.json"


@pytest.fixture
def smtp():
    with SmtpServer(credentials=("relay", "smtp-pa55")) as server:
        yield server


@pytest.fixture
def email_relay(start_relay, smtp):
    url = f"smtp://relay:smtp-pa55@127.0.0.1:{smtp.port}"
    return start_relay(EMAIL_RULES, RELAY_SMTP_URL=url, RELAY_MAIL_FROM="relay@acme.test")


def test_failure_email_has_headers_body_and_recipients(email_relay, smtp):
    event_id = email_relay.post(load_fixture(FAILED))
    (end,) = email_relay.finished(event_id)
    assert end["step"] == "delivered"
    (received,) = smtp.messages
    assert sorted(received.rcpt_tos) == ["oncall@example.com", "team@example.com"]
    message = received.message()
    assert message["From"] == "relay@acme.test"
    assert message["To"] == "oncall@example.com" and message["Cc"] == "team@example.com"
    assert message["Subject"] == "SMS failure 7102 Invalid address"
    assert message["X-Relay-Delivery-Id"] == f"{event_id}:oncall"
    assert message.get_content().strip() == "Receipt for ********xxxx: Failed"


def test_smtp_451_is_retried_and_550_is_a_dead_letter(email_relay, smtp):
    smtp.script("data", "451 4.3.0 try later")
    first = email_relay.post(load_fixture(FAILED))
    assert [e["step"] for e in email_relay.finished(first)] == ["delivered"]
    assert [a["outcome"] for a in email_relay.steps(first, "attempt")] == ["transient", "ok"]
    smtp.script("data", "550 5.7.1 rejected")
    second = email_relay.post(load_fixture("receipt-failed-invalid-sender.json"))
    (end,) = email_relay.finished(second)
    assert end["step"] == "dead_lettered"
    assert "550" in end["reason"]
    assert "smtp-pa55" not in json.dumps(email_relay.store.history(second))
    assert len(smtp.messages) == 1


SLACK_RULES = """
version: 1
destinations:
  hook:
    type: slack
    webhook_url: {webhook}
    text: "SMS {{{{ event.status }}}} to {{{{ event.destination | mask }}}}"
    retry: {{attempts: 3, initial: 100ms, max: 200ms}}
  bot:
    type: slack
    token: xoxb-s3cret-token
    channel: "#sms-ops"
    text: "SMS {{{{ event.status }}}}"
    blocks: >-
      [{{"type": "section",
         "text": {{"type": "mrkdwn", "text": "*{{{{ event.code }}}}*"}}}}]
    retry: {{attempts: 3, initial: 100ms, max: 200ms}}
routes:
  - {{name: all, match: {{kind: delivery_receipt}}, to: [hook, bot]}}
"""


def test_slack_webhook_gets_its_payload_after_a_429(start_relay, sink):
    sink.script(Answer(429, {"Retry-After": "1"}, "rate_limited"))
    sink.default = Answer(200, {"Content-Type": "text/plain"}, "ok")  # Slack's success
    rules = SLACK_RULES.format(webhook=sink.url("/services/T0/B0/xyz")).replace(
        "to: [hook, bot]", "to: [hook]"
    )
    relay = start_relay(rules)
    event_id = relay.post(load_fixture(FAILED))
    (end,) = relay.finished(event_id)
    assert end["step"] == "delivered"
    first, second = sink.requests
    assert second.at - first.at >= 0.95
    assert second.json() == {"text": "SMS Failed to ********xxxx"}


def test_slack_webhook_plain_text_error_is_permanent(start_relay, sink):
    sink.script(Answer(404, {"Content-Type": "text/plain"}, "channel_not_found"))
    rules = SLACK_RULES.format(webhook=sink.url("/services/T0/B0/xyz")).replace(
        "to: [hook, bot]", "to: [hook]"
    )
    relay = start_relay(rules)
    event_id = relay.post(load_fixture(FAILED))
    (end,) = relay.finished(event_id)
    assert end["step"] == "dead_lettered" and "channel_not_found" in end["reason"]
    assert "/services/T0/B0/xyz" not in end["reason"]


def test_slack_bot_posts_text_and_blocks_to_chat_post_message(start_relay, sink):
    sink.default = Answer(200, {"Content-Type": "application/json"}, '{"ok": true}')
    rules = SLACK_RULES.format(webhook="https://unused.invalid/x").replace(
        "to: [hook, bot]", "to: [bot]"
    )
    relay = start_relay(rules, RELAY_SLACK_API_URL=sink.url("/api").rstrip("/"))
    event_id = relay.post(load_fixture(FAILED))
    assert relay.finished(event_id)[0]["step"] == "delivered"
    (request,) = sink.requests
    assert request.path == "/api/chat.postMessage"
    assert request.header("Authorization") == "Bearer xoxb-s3cret-token"
    assert request.json() == {
        "channel": "#sms-ops",
        "text": "SMS Failed",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*7102*"}}],
    }


def test_slack_api_errors_are_classified(start_relay, sink):
    def slack_json(body: dict, status: int = 200, **headers: str) -> Answer:
        return Answer(status, {"Content-Type": "application/json", **headers}, json.dumps(body))

    sink.script(
        slack_json({"ok": False, "error": "ratelimited"}, 429, **{"Retry-After": "1"}),
        slack_json({"ok": True, "ts": "1.2"}),
        slack_json({"ok": False, "error": "channel_not_found"}),
    )
    rules = SLACK_RULES.format(webhook="https://unused.invalid/x").replace(
        "to: [hook, bot]", "to: [bot]"
    )
    relay = start_relay(rules, RELAY_SLACK_API_URL=sink.url("/api").rstrip("/"))
    first = relay.post(load_fixture(FAILED))
    assert [e["step"] for e in relay.finished(first)] == ["delivered"]
    assert [a["outcome"] for a in relay.steps(first, "attempt")] == ["transient", "ok"]
    second = relay.post(load_fixture("receipt-failed-invalid-sender.json"))
    (end,) = relay.finished(second)
    assert end["step"] == "dead_lettered" and "channel_not_found" in end["reason"]
    assert "xoxb-s3cret-token" not in json.dumps(relay.store.dead_letters.get(f"{second}:bot"))
