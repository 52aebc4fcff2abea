"""The rules loader: one fixture per error with its exact message, interpolation, durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.errors import ConfigError, RulesError
from relay.rules import (
    EmailDestination,
    HttpDestination,
    LogDestination,
    SlackDestination,
    SmsReplyDestination,
    describe,
    format_duration,
    load_rules,
    load_rules_text,
    parse_duration,
)

ERRORS = Path(__file__).parent / "errors"

# fixture → (line, "where: what"); the full message is "PATH:LINE: where: what"
EXPECTED = {
    "syntax_error": (
        4,
        "syntax: expected ',' or '}', but got ':' (while parsing a flow mapping at line 3)",
    ),
    "version_missing": (1, "(top level): missing required key 'version' (add 'version: 1')"),
    "version_unsupported": (1, "version: unsupported version 2 (expected 1)"),
    "unknown_top_level_key": (4, "(top level): unknown key 'route' (did you mean 'routes'?)"),
    "unknown_destination_key": (
        6,
        "destinations.crm: unknown key 'timout' (did you mean 'timeout'?)",
    ),
    "destination_name_reserved": (
        5,
        "destinations.crm~2: a name may not end in ~<number> (a re-route's delivery ids end so)",
    ),
    "unknown_route_key": (6, "routes[0]: unknown key 'mach' (did you mean 'match'?)"),
    "unknown_default_key": (7, "default: unknown key 'continue'"),
    "unknown_retry_key": (7, "routes[0].retry: unknown key 'inital' (did you mean 'initial'?)"),
    "unknown_sign_key": (6, "destinations.crm.sign: unknown key 'algorithm'"),
    "unknown_destination_type": (4, "destinations.crm.type: unknown destination type 'webhook'"),
    "missing_destination_type": (
        3,
        "destinations.crm: missing required key 'type' (one of http, log, email, slack, sms_reply)",
    ),
    "unknown_operator": (
        14,
        "routes[1].match.code: unknown operator 'rnage' (did you mean 'range'?)",
    ),
    "unknown_field": (8, "routes[0].match: unknown field 'stauts' (did you mean 'status'?)"),
    "bad_regex": (
        7,
        "routes[0].match.text: bad regex '^(stop|end': missing ): ^(stop|end",
    ),
    "bad_range": (7, "routes[0].match.code: range takes [lo, hi] numbers, got [7100]"),
    "not_a_mapping_condition": (7, "routes[0].match.any: any takes a non-empty list of conditions"),
    "template_syntax_error": (6, "destinations.ops.text: template syntax error: unexpected '}'"),
    "template_syntax_error_block": (
        10,
        "destinations.oncall.body: template syntax error: Encountered unknown tag 'endfi'. Jinja "
        "was looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block "
        "that needs to be closed is 'if'.",
    ),
    "template_unknown_filter": (
        5,
        "destinations.trace.text: template syntax error: No filter named 'maks'.",
    ),
    "undefined_destination": (
        8,
        "routes[0].to[1]: undefined destination 'crn' (did you mean 'crm'?)",
    ),
    "duplicate_route_name": (8, "routes[1].name: duplicate route name 'help' (first at line 5)"),
    "duplicate_key": (6, "destinations.crm: duplicate key 'url' (first at line 5)"),
    "duplicate_destination": (5, "destinations: duplicate key 'trace' (first at line 3)"),
    "missing_env_var": (
        6,
        "destinations.crm.headers.Authorization: environment variable CRM_TOKEN is not set",
    ),
    "bad_duration": (
        6,
        "destinations.crm.timeout: bad duration '5 seconds' "
        "(use 250ms, 2s, 10m, 24h, 7d, or a number of seconds)",
    ),
    "empty_to": (7, "routes[0].to: expected a destination name or a non-empty list of them"),
    "missing_to": (5, "routes[0]: missing required key 'to'"),
    "retry_attempts": (
        5,
        "destinations.trace.retry.attempts: expected a whole number of at least 1, got 0",
    ),
    "retry_max_below_initial": (9, "routes[0].retry.max: max (30s) is shorter than initial (10m)"),
    "sms_reply_on_receipts": (
        8,
        "routes[0].to[1]: sms_reply destination 'help-reply' replies to inbound messages, "
        "but this route matches only other kinds",
    ),
    "sign_secret_not_base64": (
        6,
        "destinations.crm.sign.secret: a whsec_ secret must be base64 after the prefix",
    ),
    "retry_max_below_default_initial": (
        5,
        "destinations.t.retry.max: max (1s) is shorter than initial (2s)",
    ),
    "http_method": (
        6,
        "destinations.crm.method: method must be one of POST, PUT, PATCH, got 'GET'",
    ),
    "http_url": (
        5,
        "destinations.crm.url: expected an http:// or https:// URL, got 'ftp://crm.example.com/hook'",
    ),
    "http_body": (
        6,
        "destinations.crm.body: unknown body 'evnet': expected event, raw or a template "
        "(did you mean 'event'?)",
    ),
    "missing_required_key": (3, "destinations.oncall: missing required key 'subject'"),
    "slack_target": (3, "destinations.ops: needs webhook_url, or token and channel"),
    "reserved_route_name": (
        5,
        "routes[0].name: the name 'default' is reserved for the default route",
    ),
    "yes_is_not_a_boolean": (
        6,
        "destinations.stop-confirm.to_opted_out: expected true or false, got 'yes'",
    ),
    "routes_not_a_list": (4, "routes: expected a list of routes"),
    # 458 bytes that hold 9 ** 10 values once the aliases are expanded
    "alias_bomb": (
        9,
        "lol.f: more than 500,000 values once aliases are expanded (the most a file holds)",
    ),
    "rate_limit_bad": (
        6,
        "destinations.crm.rate_limit: bad rate '20 per second' "
        "(use 20/s, 600/m, 5/100ms: a whole number per a duration)",
    ),
    "rate_limit_zero": (
        6,
        "destinations.crm.rate_limit: bad rate '0/s': the count and the duration must be above 0",
    ),
    "concurrency_zero": (
        6,
        "destinations.crm.concurrency: expected a whole number of at least 1, got 0",
    ),
    "circuit_breaker_unknown_key": (
        6,
        "destinations.crm.circuit_breaker: unknown key 'failure' (did you mean 'failures'?)",
    ),
    "circuit_breaker_bad_cooldown": (
        8,
        "destinations.crm.circuit_breaker.cooldown: bad duration 'soon' "
        "(use 250ms, 2s, 10m, 24h, 7d, or a number of seconds)",
    ),
    "fallback_undefined": (
        6,
        "destinations.crm.fallback: undefined destination 'ops-slak' (did you mean 'ops-slack'?)",
    ),
    "fallback_to_itself": (
        6,
        "destinations.crm.fallback: a destination cannot be its own fallback",
    ),
    "fallback_sms_reply": (
        6,
        "destinations.crm.fallback: sms_reply destination 'help-reply' cannot be a fallback: "
        "it replies to inbound messages only",
    ),
    "notification_to_undefined": (
        16,
        "notifications[0].to[0]: undefined destination 'ops-slak' (did you mean 'ops-slack'?)",
    ),
    "notification_unknown_kind": (
        15,
        "notifications[0].on[1]: unknown alert kind 'circuit_opened' "
        "(did you mean 'circuit_open'?)",
    ),
    "notification_unknown_label": (
        16,
        "notifications[0].group_by[0]: unknown label 'destinaton' (did you mean 'destination'?)",
    ),
    "notification_bad_group_wait": (
        16,
        "notifications[0].group_wait: bad duration 'half a minute' "
        "(use 250ms, 2s, 10m, 24h, 7d, or a number of seconds)",
    ),
    "notification_missing_on": (
        14,
        "notifications[0]: missing required key 'on'",
    ),
    "notification_unknown_key": (
        16,
        "notifications[0]: unknown key 'group_intervall' (did you mean 'group_interval'?)",
    ),
    "notification_duplicate_name": (
        17,
        "notifications[1].name: duplicate notification name 'delivery-trouble' (first at line 14)",
    ),
    "notification_to_sms_reply": (
        15,
        "notifications[0].to[1]: sms_reply destination 'help-reply' cannot send "
        "notifications: it replies to inbound messages only",
    ),
    "notification_template_event": (
        17,
        "notifications[0].template: unknown name 'event': a notification's template sees "
        "notification, labels, counts, total, examples, first, previous",
    ),
    "notification_template_syntax": (
        17,
        "notifications[0].template: template syntax error: unexpected '}'",
    ),
    "notifications_not_a_list": (
        9,
        "notifications: expected a list of notifications",
    ),
    "tls_file_missing": (
        7,
        "destinations.crm.tls.ca: cannot read /nonexistent/relay-tests/ca.pem: "
        "No such file or directory",
    ),
    "tls_not_a_pem_file": (
        7,
        "destinations.crm.tls.client_cert: /dev/null holds no PEM (no -----BEGIN line)",
    ),
    "tls_relative_path": (
        7,
        "destinations.crm.tls.client_cert: expected a PEM (-----BEGIN …) or an absolute file "
        "path, got 'certs/client.pem'",
    ),
    "tls_key_without_cert": (6, "destinations.crm.tls: client_key needs client_cert"),
    "tls_cert_without_key": (
        6,
        "destinations.crm.tls: client_cert holds no private key: add client_key",
    ),
    "tls_on_http_url": (6, "destinations.crm.tls: tls needs an https:// url"),
    "oauth2_token_url_http": (
        8,
        "destinations.crm.auth.oauth2.token_url: must be https:// (http:// only to a loopback "
        "host: 127.0.0.0/8, ::1, localhost), got 'http://login.internal/oauth2/token'",
    ),
    "oauth2_missing_client_secret": (
        7,
        "destinations.crm.auth.oauth2: missing required key 'client_secret'",
    ),
    "oauth2_and_authorization_header": (
        6,
        "destinations.crm.headers.Authorization: auth.oauth2 sets Authorization: "
        "leave this header out",
    ),
}


def _errors(path: Path, env: dict | None = None) -> list[str]:
    with pytest.raises(RulesError) as caught:
        load_rules(str(path), env={} if env is None else env)
    return caught.value.errors


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_error_fixture_reports_its_exact_message(name):
    path = ERRORS / f"{name}.yaml"
    line, message = EXPECTED[name]
    assert _errors(path) == [f"{path}:{line}: {message}"]


def test_every_fixture_has_an_expected_message():
    fixtures = {path.stem for path in ERRORS.glob("*.yaml")}
    assert fixtures - {"many_errors"} == set(EXPECTED)


def test_every_problem_in_a_file_is_reported_at_once_in_line_order():
    path = ERRORS / "many_errors.yaml"
    assert _errors(path) == [
        f"{path}:{line}: {message}"
        for line, message in [
            (6, "destinations.crm.method: method must be one of POST, PUT, PATCH, got 'GET'"),
            (
                7,
                "destinations.crm.headers.Authorization: environment variable CRM_TOKEN is not set",
            ),
            (9, "destinations.ops.type: unknown destination type 'slak' (did you mean 'slack'?)"),
            (15, "routes[0].match.code: unknown operator 'rnage' (did you mean 'range'?)"),
            (16, "routes[0].to[1]: undefined destination 'crn' (did you mean 'crm'?)"),
            (
                17,
                "routes[0].retry.initial: bad duration '1 minute' "
                "(use 250ms, 2s, 10m, 24h, 7d, or a number of seconds)",
            ),
            (18, "routes[1].name: duplicate route name 'failures' (first at line 12)"),
            (
                19,
                "routes[1].match.keyword: bad regex '(': missing ): (",
            ),
            (20, "routes[1].to: expected a destination name or a non-empty list of them"),
            (22, "(top level): unknown key 'extra'"),
        ]
    ]


def test_a_destination_with_an_error_still_has_its_fallback_checked(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\n"
        "destinations:\n"
        "  app:\n"
        "    type: http\n"
        "    url: https://app.example.com/hook\n"
        "    fallback: nowhere\n"
        "    rate_limit: fast\n"
        "  reply: {type: sms_reply, text: ok}\n"
        "  second: {type: http, url: 'https://x.example.com', fallback: reply, timeout: soon}\n"
        "routes:\n  - {name: all, to: [app]}\n"
    )
    assert _errors(path) == [
        f"{path}:6: destinations.app.fallback: undefined destination 'nowhere'",
        f"{path}:7: destinations.app.rate_limit: bad rate 'fast' "
        "(use 20/s, 600/m, 5/100ms: a whole number per a duration)",
        f"{path}:9: destinations.second.timeout: bad duration 'soon' "
        "(use 250ms, 2s, 10m, 24h, 7d, or a number of seconds)",
        f"{path}:9: destinations.second.fallback: sms_reply destination 'reply' cannot be a "
        "fallback: it replies to inbound messages only",
    ]


def test_rules_error_is_a_config_error_listing_the_messages():
    with pytest.raises(ConfigError) as caught:
        load_rules_text("version: 3\n", "r.yaml", env={})
    assert str(caught.value) == "r.yaml:1: version: unsupported version 3 (expected 1)"


def test_unreadable_file_is_one_error_naming_it(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert _errors(missing) == [f"{missing}:1: file: cannot read: No such file or directory"]


def test_template_error_in_block_scalar_points_at_its_own_line():
    text = "version: 1\ndestinations:\n  t:\n    type: log\n    text: |\n      ok\n      ok\n"
    text += "      {{ x }\n"
    with pytest.raises(RulesError) as caught:
        load_rules_text(text, "r.yaml", env={})
    assert caught.value.errors == [
        "r.yaml:8: destinations.t.text: template syntax error: unexpected '}'"
    ]


def test_destination_checks_add_settings_problems_at_the_destination():
    def checks(name, destination):
        if isinstance(destination, EmailDestination):
            return ["email destinations need RELAY_SMTP_URL"]
        return []

    text = (
        "version: 1\ndestinations:\n  trace: {type: log}\n"
        "  oncall:\n    type: email\n    to: a@example.com\n    subject: s\n    body: b\n"
    )
    with pytest.raises(RulesError) as caught:
        load_rules_text(text, "r.yaml", env={}, checks=checks)
    assert caught.value.errors == [
        "r.yaml:4: destinations.oncall: email destinations need RELAY_SMTP_URL"
    ]


FULL = """\
version: 1
destinations:
  crm:
    type: http
    url: ${CRM_URL:-https://crm.example.com/sms}
    headers: {Authorization: "Bearer ${CRM_TOKEN}", X-Attempts: 3}
    sign: {secret: "${SECRET}"}
    timeout: 5s
    method: put
  ops:
    type: slack
    webhook_url: https://hooks.slack.com/services/T/B/X
    text: "{{ event.status }}"
  oncall:
    type: email
    to: [oncall@example.com]
    cc: boss@example.com
    subject: "SMS failure {{ event.code }}"
    body: "{{ event | tojson(indent=2) }}"
  trace: {type: log}
  help-reply:
    type: sms_reply
    text: "ACME: reply STOP to opt out."
    from: 447700900000
    cooldown: 24h
routes:
  - name: failures
    match: {status: [Failed, Un-Delivered]}
    to: [ops, crm]
  - name: everything
    to: [oncall, trace]
  - name: help
    match:
    to: help-reply
default: {to: [crm]}
"""
ENV = {"CRM_TOKEN": "tok", "SECRET": "s3"}


def test_valid_file_loads_into_typed_destinations():
    ruleset = load_rules_text(FULL, "rules.yaml", env=ENV)
    crm = ruleset.destinations["crm"]
    assert isinstance(crm, HttpDestination)
    assert (crm.url, crm.method, crm.timeout, crm.body, crm.sign.secret) == (
        "https://crm.example.com/sms",
        "PUT",
        5.0,
        "event",
        "s3",
    )
    assert {k: v.render({}, "r", "crm") for k, v in crm.headers.items()} == {
        "Authorization": "Bearer tok",
        "X-Attempts": "3",
    }
    assert isinstance(ruleset.destinations["ops"], SlackDestination)
    assert ruleset.destinations["oncall"].cc == ("boss@example.com",)
    assert isinstance(ruleset.destinations["trace"], LogDestination)
    reply = ruleset.destinations["help-reply"]
    assert isinstance(reply, SmsReplyDestination)
    assert (reply.from_, reply.cooldown, reply.to_opted_out) == ("447700900000", 86400.0, False)
    assert ruleset.routes[2].match is None and ruleset.routes[2].to == ("help-reply",)


def test_describe_summarises_a_valid_file():
    ruleset = load_rules_text(FULL, "rules.yaml", env=ENV)
    assert describe(ruleset) == (
        "rules.yaml: OK — 3 routes, 5 destinations (email 1, http 1, log 1, slack 1, "
        f"sms_reply 1), default → crm, version {ruleset.version}"
    )
    assert len(ruleset.version) == 12


def test_version_changes_with_the_content():
    first = load_rules_text(FULL, env=ENV)
    second = load_rules_text(FULL + "# changed\n", env=ENV)
    assert first.version != second.version


def test_minimal_file_loads():
    ruleset = load_rules_text("version: 1\nroutes:\ndestinations:\n", env={})
    assert (ruleset.routes, dict(ruleset.destinations), ruleset.default) == ((), {}, None)


def test_default_log_text_summarises_the_event():
    ruleset = load_rules_text("version: 1\ndestinations:\n  t: {type: log}\n", env={})
    event = {"id": "E1", "kind": "delivery_receipt", "status": "Failed", "code": "7102"}
    event["destination"] = "447700900123"
    text = ruleset.destinations["t"].text.render(event, "r", "t")
    assert text == "r → t: delivery_receipt E1 Failed code=7102 to ********0123"


# --- ${VAR} interpolation -------------------------------------------------------------


def _url(value: str, env: dict) -> str:
    text = f"version: 1\ndestinations:\n  d:\n    type: http\n    url: {value}\n"
    return load_rules_text(text, env=env).destinations["d"].url


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("https://${HOST}/x", {"HOST": "h.example"}, "https://h.example/x"),
        ("https://${HOST:-d.example}/x", {}, "https://d.example/x"),
        ("https://${HOST:-d.example}/x", {"HOST": ""}, "https://d.example/x"),
        ("https://${HOST:-d.example}/x", {"HOST": "h.example"}, "https://h.example/x"),
        ('"https://h.example/$${NOT_A_VAR}"', {}, "https://h.example/${NOT_A_VAR}"),
        ("${URL}", {"URL": "https://u.example/"}, "https://u.example/"),
    ],
)
def test_interpolation_fills_values_from_env(value, env, expected):
    assert _url(value, env) == expected


@pytest.mark.parametrize(
    ("value", "env", "message"),
    [
        ("https://${HOST}/x", {}, "environment variable HOST is not set"),
        ("https://${HOST}/x", {"HOST": ""}, "environment variable HOST is empty"),
        (
            "'https://${1X}/x'",
            {},
            "bad variable reference '${1X}' (expected ${NAME} or ${NAME:-default})",
        ),
        ("'https://x/${'", {}, "unterminated '${' (write $${ for a literal ${)"),
    ],
)
def test_interpolation_problems_are_reported_once(value, env, message):
    with pytest.raises(RulesError) as caught:
        _url(value, env)
    assert caught.value.errors == [f"rules.yaml:5: destinations.d.url: {message}"]


def test_unquoted_value_is_typed_after_interpolation():
    text = "version: 1\ndestinations:\n  d: {type: log, retry: {attempts: '${N}'}}\n"
    with pytest.raises(RulesError):
        load_rules_text(text, env={"N": "5"})  # quoted: stays a string
    text = "version: 1\ndestinations:\n  d:\n    type: log\n    retry:\n      attempts: ${N:-5}\n"
    assert load_rules_text(text, env={}).destinations["d"].retry.attempts == 5


def test_interpolation_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("RELAY_TEST_HOOK_HOST", "env.example")
    text = "version: 1\ndestinations:\n  d: {type: http, url: 'https://${RELAY_TEST_HOOK_HOST}'}\n"
    assert load_rules_text(text).destinations["d"].url == "https://env.example"


def test_yaml_1_1_surprises_stay_strings():
    text = (
        "version: 1\ndestinations:\n  t: {type: log}\n"
        "routes:\n  - {name: yes-no, match: {keyword: [YES, NO, on]}, to: [t]}\n"
        "  - {name: zero, match: {destination: {prefix: 0044}}, to: [t]}\n"
    )
    ruleset = load_rules_text(text, env={})
    assert ruleset.routes[0].match["keyword"] == ("YES", "NO", "on")
    assert [hit.route for hit in ruleset.match({"keyword": "YES"})] == ["yes-no"]
    assert [hit.route for hit in ruleset.match({"destination": "00441234"})] == ["zero"]


def test_merge_keys_share_settings():
    text = (
        "version: 1\ndestinations:\n"
        "  a: &base {type: http, url: 'https://a.example', timeout: 3s}\n"
        "  b:\n    <<: *base\n    url: https://b.example\n"
    )
    destinations = load_rules_text(text, env={}).destinations
    assert (destinations["b"].url, destinations["b"].timeout) == ("https://b.example", 3.0)


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("10m", 600.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("1.5s", 1.5),
        ("30", 30.0),
        (30, 30.0),
        (0.5, 0.5),
        (" 5m ", 300.0),
    ],
)
def test_parse_duration_reads_each_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "1h30m", "-5s", "five", True, None, -1, "5 s s"])
def test_parse_duration_rejects_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1800, "30m"), (0.25, "250ms"), (86400, "1d"), (90, "90s"), (1.5, "1500ms")],
)
def test_format_duration_spells_the_largest_exact_unit(seconds, text):
    assert format_duration(seconds) == text
