"""The rules file as the console shows it, masked from the parsed file: each secret value
whole, however YAML writes it, with every line kept where it was."""

from __future__ import annotations

import pytest

from relay.rules.masking import is_secret_key
from relay.web.console.rules_text import redacted

CASES = [
    # (a rules file's text, as shown)
    ('headers: {"X-Api-Key": abc123}\n', 'headers: {"X-Api-Key": ****}\n'),
    ("headers:\n  'Authorization': Basic dXNlcg==\n", "headers:\n  'Authorization': ****\n"),
    (
        "sign:\n  secret: >-\n    folded-secret\n    more\n",
        "sign:\n  secret: >-\n    ****\n    ****\n",
    ),
    ("body:\n  token: |\n    literal-secret\n", "body:\n  token: |\n    ****\n"),
    ("body:\n  api_key:\n    next-line-secret\n", "body:\n  api_key:\n    ****\n"),
    ("body:\n  password: abc#def # why\n", "body:\n  password: **** # why\n"),
    ("body:\n  secret: a,b]c}d\n", "body:\n  secret: ****\n"),
    ("body: {secret: 'a # b, c'}\n", "body: {secret: '****'}\n"),
    ("headers:\n  X-Custom-Auth: custom\n", "headers:\n  X-Custom-Auth: ****\n"),
    ("headers:\n  x-session-token: t0k\n", "headers:\n  x-session-token: ****\n"),
    ("headers:\n  X-Client-Key: k3y\n", "headers:\n  X-Client-Key: ****\n"),
    (
        "body:\n  credentials: {user: bot, pass: pw}\n",
        "body:\n  credentials: {user: ****, pass: ****}\n",
    ),
    (
        "body:\n  secret: &s shared-secret\n  copy: *s\n",
        "body:\n  secret: &s ****\n  copy: *s\n",
    ),
    (
        "x: &s anchored\nheaders: {Authorization: *s}\n",
        "x: &s ****\nheaders: {Authorization: *s}\n",
    ),
    ("headers:\n  X-Keyword: STOP\n", "headers:\n  X-Keyword: STOP\n"),
    ("text: 'tokens of #1: ok'\n", "text: 'tokens of #1: ok'\n"),
    ('body: "a\\n  token: b"\n', 'body: "a\\n  token: b"\n'),
    ("# password: hunter22, and more\nx: 1\n", "# password: ****\nx: 1\n"),
    (
        "#   webhook_url: https://hooks.slack.com/services/T/B/x\n",
        "#   webhook_url: https://hooks.slack.com/****\n",
    ),
]


@pytest.mark.parametrize(("text", "shown"), CASES)
def test_each_secret_is_masked_whole_wherever_yaml_puts_it(text, shown):
    assert redacted(text) == shown


def test_a_text_that_does_not_parse_or_would_not_load_is_not_shown():
    assert redacted("token: [unclosed\n") is None
    assert redacted("a: 1\na: 2\n") is None  # a duplicate key: its value was never read


def test_a_value_taken_from_the_environment_is_masked_wherever_it_appears():
    text = "text: 'call 0800-SECRET-LINE'  # 0800-SECRET-LINE\n"
    assert redacted(text, {"0800-SECRET-LINE"}) == "text: 'call ****'  # ****\n"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("Proxy-Authorization", True),
        ("X-Api-Key", True),
        ("x-custom-auth", True),
        ("X-Auth-Token", True),
        ("X-Hub-Signature-256", True),
        ("apiKey", True),
        ("client_secret", True),
        ("Set-Cookie", True),
        ("password", True),
        ("X-Keyword", False),
        ("keyword", False),
        ("X-Route", False),
        ("X-Tenant", False),
        ("author", False),
    ],
)
def test_one_rule_says_which_keys_hold_secrets(name, secret):
    assert is_secret_key(name) is secret
