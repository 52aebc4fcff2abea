"""``relay rules test`` shows what a destination's fallback would get, with a sample failure."""

from __future__ import annotations

from relay.ops.dryrun import SAMPLE_ERROR, dry_run, format_text
from relay.rules import load_rules_text
from relay.settings import load_settings
from tests.conftest import load_fixture

RULES = """
version: 1
destinations:
  crm:
    type: http
    url: https://crm.example.com/hook
    retry: {attempts: 3}
    fallback: ops-slack
  ops-slack:
    type: slack
    webhook_url: https://hooks.slack.example/services/T0/B0/secret
    text: >-
      {{ failure.destination }} x{{ failure.attempts }} {{ event.status }}:
      {{ failure.last_error }}
  broken:
    type: log
    fallback: ops-bad
  ops-bad:
    type: log
    text: "{{ failure.nothing }}"
routes: [{name: all, to: [crm, broken]}]
"""


def test_the_fallback_is_rendered_with_a_sample_failure_and_masked_like_the_rest():
    ruleset = load_rules_text(RULES, env={})
    (report,) = dry_run(ruleset, load_fixture("receipt-delivered.json"), load_settings({}))
    crm, broken = report["deliveries"]
    fallback = crm["fallback"]
    assert fallback["destination"] == "ops-slack" and fallback["type"] == "slack"
    event_id = report["event"]["id"]
    assert fallback["failure"] == {
        "destination": "crm",
        "delivery_id": f"{event_id}:crm",
        "attempts": 3,
        "last_error": SAMPLE_ERROR,
    }
    assert fallback["request"] == {
        "webhook_url": "https://hooks.slack.example/****",
        "payload": {"text": f"crm x3 Delivered: {SAMPLE_ERROR}"},
    }
    # a fallback template that cannot render says so, as any other
    assert broken["fallback"]["error"].startswith("template error: ")
    text = format_text([report])
    assert "    if dead-lettered → ops-slack (slack, fallback; " in text
    assert f'"text": "crm x3 Delivered: {SAMPLE_ERROR}"' in text


def test_a_destination_without_a_fallback_shows_none():
    ruleset = load_rules_text(RULES.replace("    fallback: ops-slack\n", ""), env={})
    (report,) = dry_run(ruleset, load_fixture("receipt-delivered.json"), load_settings({}))
    assert "fallback" not in report["deliveries"][0]
