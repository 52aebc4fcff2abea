"""The rules file as the console shows it: secrets written in it masked, nothing else."""

from __future__ import annotations

import pytest

from relay.web.console.rules_text import redacted

CASES = [
    # (line of a rules file, as shown)
    ("    type: http", "    type: http"),
    ("    url: https://crm.example/hook", "    url: https://crm.example/hook"),
    (
        "    url: https://user:pw@crm.example/hook?api_key=abc123&x=1",
        "    url: https://user:****@crm.example/hook?api_key=****&x=****",
    ),
    (
        '    headers: {Authorization: "Bearer ${CRM_TOKEN}", X-Route: "{{ route }}"}',
        '    headers: {Authorization: "Bearer ${CRM_TOKEN}", X-Route: "{{ route }}"}',
    ),
    ("    headers: {X-Api-Key: literalsecret}", "    headers: {X-Api-Key: ****}"),
    ("      Authorization: Basic dXNlcjpwYXNz", "      Authorization: ****"),
    ("      password: 'hunter22'", "      password: '****'"),
    ('    sign: {secret: "s3cr3t-signing"}', '    sign: {secret: "****"}'),
    ('    sign: {secret: "${CRM_SIGNING_SECRET}"}', '    sign: {secret: "${CRM_SIGNING_SECRET}"}'),
    ("    token: xoxb-1234567890  # the bot", "    token: ****  # the bot"),
    ("    token: ${SLACK_BOT_TOKEN}", "    token: ${SLACK_BOT_TOKEN}"),
    ("    token: ${SLACK_BOT_TOKEN:-xoxb-default}", "    token: ${SLACK_BOT_TOKEN:-****}"),
    (
        "    webhook_url: https://hooks.slack.com/services/T0/B0/xyz",
        "    webhook_url: https://hooks.slack.com/****",
    ),
    ("    webhook_url: ${SLACK_OPS_WEBHOOK}", "    webhook_url: ${SLACK_OPS_WEBHOOK}"),
    (
        "    url: ${FAILURES_WEBHOOK_URL:-http://127.0.0.1:9009/sms-failures?k=v}",
        "    url: ${FAILURES_WEBHOOK_URL:-http://127.0.0.1:9009/sms-failures?k=****}",
    ),
    # match conditions are not secrets, whatever their key
    (
        "    match: {kind: inbound_message, keyword: [STOP]}",
        "    match: {kind: inbound_message, keyword: [STOP]}",
    ),
    ("      keyword: STOP", "      keyword: STOP"),
    ("# token: commented-out-secret", "# token: ****"),
]


@pytest.mark.parametrize(("line", "shown"), CASES)
def test_each_line_is_shown_with_its_secrets_masked(line, shown):
    assert redacted(line + "\n") == shown + "\n"


def test_values_taken_from_the_environment_are_masked_wherever_they_appear():
    text = "text: 'reply to 0800-SECRET-LINE'\n"
    assert redacted(text, {"SECRET-LINE", "ab"}) == "text: 'reply to 0800-****'\n"


def test_the_example_rules_file_is_shown_as_it_is(tmp_path):
    from tests.harness import ROOT

    text = (ROOT / "config" / "rules.yaml").read_text()
    assert redacted(text) == text
