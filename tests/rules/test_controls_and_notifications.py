"""Destination controls and notifications as the rules file writes them (errors: test_loader)."""

from __future__ import annotations

import pytest

from relay.rules import load_rules_text
from relay.rules.lint import lint
from relay.rules.model import CircuitBreaker, Notification, RateLimit

BASE = """\
version: 1
destinations:
  crm:
    type: http
    url: https://crm.example.com/hook
{extra}
  ops-slack:
    type: slack
    webhook_url: https://hooks.slack.example/T0/B0/x
    text: "{{{{ event.id }}}}"
  spare:
    type: log
routes:
  - name: all
    to: crm
{tail}
"""


def _load(extra: str = "", tail: str = ""):
    return load_rules_text(BASE.format(extra=extra, tail=tail), env={})


@pytest.mark.parametrize(
    ("written", "count", "per"),
    [
        ("20/s", 20, 1.0),
        ("600/m", 600, 60.0),
        ("5/100ms", 5, 0.1),
        ("100/2s", 100, 2.0),
        ("3 / h", 3, 3600.0),
    ],
)
def test_rate_limits_parse_as_a_count_per_seconds(written, count, per):
    crm = _load(f'    rate_limit: "{written}"').destinations["crm"]
    assert crm.rate_limit == RateLimit(count, per)


def test_controls_default_to_none_and_circuit_breaker_keys_to_5_and_30s():
    plain = _load().destinations["crm"]
    assert (plain.rate_limit, plain.concurrency, plain.circuit_breaker, plain.fallback) == (
        None,
        None,
        None,
        None,
    )
    crm = _load("    concurrency: 10\n    circuit_breaker: {}").destinations["crm"]
    assert crm.concurrency == 10
    assert crm.circuit_breaker == CircuitBreaker(failures=5, cooldown=30.0)
    crm = _load("    circuit_breaker: {failures: 3, cooldown: 2m}").destinations["crm"]
    assert crm.circuit_breaker == CircuitBreaker(failures=3, cooldown=120.0)


def test_a_fallback_may_have_its_own_fallback():
    text = BASE.format(extra="    fallback: ops-slack", tail="").replace(
        '    text: "{{ event.id }}"\n', '    text: "{{ event.id }}"\n    fallback: spare\n'
    )
    ruleset = load_rules_text(text, env={})
    assert ruleset.destinations["crm"].fallback == "ops-slack"
    assert ruleset.destinations["ops-slack"].fallback == "spare"


def test_notifications_with_their_defaults_and_a_single_kind_or_target_as_a_word():
    ruleset = _load(
        tail="notifications:\n"
        "  - name: trouble\n"
        "    on: dead_letter\n"
        "    to: ops-slack\n"
        "  - name: circuits\n"
        "    on: [circuit_open, circuit_closed]\n"
        "    group_by: []\n"
        "    group_wait: 1s\n"
        "    group_interval: 3s\n"
        "    to: [ops-slack, spare]\n"
        '    template: "{{ total }} alerts"\n'
    )
    trouble, circuits = ruleset.notifications
    assert trouble == Notification(
        "trouble", ("dead_letter",), ("ops-slack",), ("destination",), 30.0, 300.0, None, 17
    )
    assert (circuits.on, circuits.group_by, circuits.group_wait, circuits.group_interval) == (
        ("circuit_open", "circuit_closed"),
        (),
        1.0,
        3.0,
    )
    assert circuits.to == ("ops-slack", "spare")
    assert circuits.template is not None and circuits.template.source == "{{ total }} alerts"


def test_an_empty_notifications_key_is_no_notifications():
    assert _load(tail="notifications:").notifications == ()


def test_lint_counts_a_fallback_or_a_notification_target_as_used():
    warned = {w.where for w in lint(_load())}
    assert warned == {"destinations.ops-slack", "destinations.spare"}
    used = _load(
        "    fallback: ops-slack",
        "notifications:\n  - name: n\n    on: [dead_letter]\n    to: spare\n",
    )
    assert [w for w in lint(used) if "not used" in w.message] == []


def test_rules_check_counts_notifications_only_when_there_are_some():
    from relay.rules import describe

    assert "notification" not in describe(_load())
    tail = "notifications:\n  - name: n\n    on: [dead_letter]\n    to: spare\n"
    assert "3 destinations (http 1, log 1, slack 1), 1 notification, no default" in describe(
        _load(tail=tail)
    )


ISSUE_EXAMPLE = """\
version: 1
destinations:
  crm:
    type: http
    url: https://crm.internal/sms
    rate_limit: 20/s            # token bucket shared by every worker (Redis); 20/s, 600/m, 5/100ms
    concurrency: 10             # at most 10 requests in flight to it, across workers
    circuit_breaker: {failures: 5, cooldown: 30s}   # open after 5 consecutive transient
                                # failures; no attempts while open; one probe after cooldown
    fallback: ops-slack         # gets the event (with the failure) when a delivery dead-letters
  ops-slack: {type: slack, webhook_url: "${OPS_SLACK_URL}"}
routes:
  - {name: all, to: [crm]}
notifications:                  # relay's own alerts, routed to its own destinations
  - name: delivery-trouble
    on: [dead_letter, circuit_open, circuit_closed]
    group_by: [destination]
    group_wait: 30s             # gather before the first message of a group
    group_interval: 5m          # at most one message per group per interval
    to: [ops-slack]
"""


def test_the_example_of_the_issue_loads_and_slack_needs_no_text():
    from relay.rules.schema import DEFAULT_SLACK_TEXT

    env = {"OPS_SLACK_URL": "https://hooks.slack.example/services/T0/B0/x"}
    ruleset = load_rules_text(ISSUE_EXAMPLE, env=env)
    slack = ruleset.destinations["ops-slack"]
    assert slack.text is DEFAULT_SLACK_TEXT
    event = {"kind": "delivery_receipt", "id": "E1", "status": "Failed", "code": "7102"}
    event["destination"] = "447700900123"
    failure = {"destination": "crm", "attempts": 20, "last_error": "HTTP 503: <down>"}
    assert slack.text.render(event, "all", "ops-slack", failure) == (
        "crm gave up on delivery_receipt E1 after 20 attempts: HTTP 503: &lt;down&gt;"
    )
    assert slack.text.render(event, "all", "ops-slack") == (
        "all → ops-slack: delivery_receipt E1 Failed code=7102 to ********0123"
    )
