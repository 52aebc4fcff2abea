"""Lint: warnings about rules that load but cannot do what they say, each message exact."""

from __future__ import annotations

import time

import pytest

from relay.rules import load_rules_text
from relay.rules.lint import lines_of, lint
from tests.cli.test_rules_commands import EXAMPLE, relay
from tests.harness import ROOT

HEAD = """version: 1
destinations:
  t: {type: log}
routes:
"""


def _warnings(routes: str, head: str = HEAD, tail: str = "") -> list[str]:
    text = head + routes + tail
    ruleset = load_rules_text(text, "rules.yaml", env={})
    return [warning.format("rules.yaml") for warning in lint(ruleset, lines_of(text))]


# (routes, the warnings) — line 5 is the first route
CASES = [
    # a route after one that matches every event and does not continue
    (
        "  - {name: everything, to: t}\n  - {name: late, match: {kind: x}, to: t}\n",
        [
            "rules.yaml:6: routes[1]: warning: never matches: routes[0] 'everything' before it "
            "matches every event and does not continue"
        ],
    ),
    (
        "  - {name: a, match: {kind: x}, to: t}\n"
        "  - {name: everything, match: {}, to: t}\n"
        "  - {name: b, to: t}\n"
        "  - {name: c, match: {code: '7102'}, to: t}\n",
        [
            "rules.yaml:7: routes[2]: warning: never matches: routes[1] 'everything' before it "
            "matches every event and does not continue",
            "rules.yaml:8: routes[3]: warning: never matches: routes[1] 'everything' before it "
            "matches every event and does not continue",
        ],
    ),
    ("  - {name: all, to: t, continue: true}\n  - {name: b, match: {kind: x}, to: t}\n", []),
    # the same match, or a subset of it, earlier
    (
        "  - {name: a, match: {kind: x, code: [7101, 7102]}, to: t}\n"
        "  - {name: b, match: {code: [7101, 7102], kind: x}, to: t}\n",
        [
            "rules.yaml:6: routes[1]: warning: never matches: routes[0] 'a' before it "
            "has the same match and does not continue"
        ],
    ),
    (
        "  - {name: a, match: {kind: x}, to: t}\n"
        "  - {name: b, match: {kind: x, code: {not: '7109'}}, to: t}\n",
        [
            "rules.yaml:6: routes[1]: warning: never matches: routes[0] 'a' before it "
            "has a subset of this match and does not continue"
        ],
    ),
    (
        "  - {name: a, match: {code: 7102}, to: t}\n  - {name: b, match: {code: 7102.0}, to: t}\n",
        [
            "rules.yaml:6: routes[1]: warning: never matches: routes[0] 'a' before it "
            "has the same match and does not continue"
        ],
    ),
    # no false alarms: different values, a narrower earlier route, continue, bool vs number
    ("  - {name: a, match: {kind: x}, to: t}\n  - {name: b, match: {kind: y}, to: t}\n", []),
    (
        "  - {name: a, match: {kind: x, code: '7102'}, to: t}\n"
        "  - {name: b, match: {kind: x}, to: t}\n",
        [],
    ),
    (
        "  - {name: a, match: {kind: x}, to: t, continue: true}\n"
        "  - {name: b, match: {kind: x}, to: t}\n",
        [],
    ),
    ("  - {name: a, match: {final: 1}, to: t}\n  - {name: b, match: {final: true}, to: t}\n", []),
    (
        "  - {name: a, match: {code: '7102'}, to: t}\n"
        "  - {name: b, match: {code: ['7102']}, to: t}\n",
        [],
    ),
    # codes not in the status-code table, compared by equality anywhere
    (
        "  - name: a\n"
        "    match:\n"
        "      code: [7102, '7999']\n"
        "      any:\n"
        "        - code: {not: {in: ['1234']}}\n"
        "        - {code: {equals: 42}}\n"
        "      not: {code: 'x1'}\n"
        "    to: t\n",
        [
            "rules.yaml:7: routes[0].match.code[1]: warning: code '7999' is not in the "
            "status-code table",
            "rules.yaml:9: routes[0].match.any[0].code.not.in[0]: warning: code '1234' is not "
            "in the status-code table",
            "rules.yaml:10: routes[0].match.any[1].code.equals: warning: code '42' is not in "
            "the status-code table",
            "rules.yaml:11: routes[0].match.not.code: warning: code 'x1' is not in the "
            "status-code table",
        ],
    ),
    (
        "  - name: a\n"
        "    match:\n"
        "      code: {regex: '^99', prefix: '99', range: [9900, 9999], suffix: '9'}\n"
        "      raw.code: '9999'\n"
        "    to: t\n",
        [],
    ),
    # statuses Webex Connect never sends
    (
        "  - name: a\n    match:\n      status: [Failed, Delivred, undelivered, UN DELIVERED]\n"
        "    to: t\n",
        [
            "rules.yaml:7: routes[0].match.status[1]: warning: status 'Delivred' is never sent "
            "by Webex Connect (did you mean 'Delivered'?)"
        ],
    ),
    (
        "  - {name: a, match: {all: [{status: {not: Pending}}]}, to: t}\n",
        [
            "rules.yaml:5: routes[0].match.all[0].status.not: warning: status 'Pending' is "
            "never sent by Webex Connect (it sends Submitted, Delivered, Un-Delivered, Failed, "
            "Clicked)"
        ],
    ),
    ("  - {name: a, match: {status: {contains: Pend}}, to: t}\n", []),
]


@pytest.mark.parametrize(("routes", "expected"), CASES)
def test_lint_warns_with_the_exact_message(routes, expected):
    assert _warnings(routes) == expected


def test_a_destination_no_route_uses_is_reported_at_its_line():
    head = HEAD.replace("routes:", "  spare: {type: log}\n  used: {type: log}\nroutes:")
    assert _warnings("  - {name: a, match: {kind: x}, to: t}\n", head, "default: {to: used}\n") == [
        "rules.yaml:4: destinations.spare: warning: not used by any route or the default",
    ]


def test_a_default_after_a_route_matching_everything_is_never_used():
    routes = "  - {name: a, match: {kind: x}, to: t}\n  - {name: all, to: t, continue: true}\n"
    assert _warnings(routes, tail="default: {to: t}\n") == [
        "rules.yaml:7: default: warning: never used: routes[1] 'all' matches every event",
    ]


def test_without_file_lines_warnings_point_at_the_route():
    text = HEAD + "  - name: a\n    match:\n      code: '7999'\n    to: t\n"
    (warning,) = lint(load_rules_text(text, env={}))
    assert (warning.line, warning.where) == (5, "routes[0].match.code")


def test_the_shipped_rules_have_no_warnings():
    text = (ROOT / "config" / "rules.yaml").read_text()
    assert lint(load_rules_text(text, env={}), lines_of(text)) == []


def _routes(count: int) -> str:
    return "".join(
        f"  - {{name: r{i}, match: {{kind: x, code: '{i}', source: s{i % 7}}}, to: t}}\n"
        for i in range(count)
    )


def _lint_seconds(count: int) -> float:
    """The best of 5 timings of lint over ``count`` routes, in this process's CPU time
    (other processes on a loaded machine do not count; the best of 5 drops the rest)."""
    text = HEAD + _routes(count)
    ruleset, lines = load_rules_text(text, "rules.yaml", env={}), lines_of(text)
    timings = []
    for _ in range(5):
        started = time.process_time()
        lint(ruleset, lines)
        timings.append(time.process_time() - started)
    return min(timings)


def test_many_routes_each_get_their_warning():
    warnings = _warnings(_routes(1500))
    assert warnings == [
        f"rules.yaml:{5 + i}: routes[{i}].match.code: warning: code '{i}' is not in the "
        "status-code table"
        for i in range(1500)
    ]


def test_lint_time_grows_linearly_with_the_routes():
    # ten times the routes: about ten times the time (10x to 17x measured on a loaded 2-core
    # machine); a check comparing every route with every other would take about 100 times
    small, large = _lint_seconds(500), _lint_seconds(5000)
    assert large < 40 * small, f"500 routes: {small * 1000:.1f} ms, 5000: {large * 1000:.1f} ms"


RULES_WITH_WARNINGS = HEAD + "  - {name: everything, to: t}\n  - {name: late, to: t}\n"


def test_check_prints_warnings_after_the_summary_and_exits_0(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_WITH_WARNINGS)
    done = relay("rules", "check", str(rules))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{rules}: OK — 2 routes")
    assert done.stderr.splitlines() == [
        f"{rules}:6: routes[1]: warning: never matches: routes[0] 'everything' before it "
        "matches every event and does not continue"
    ]


def test_check_strict_exits_1_on_warnings(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_WITH_WARNINGS)
    done = relay("rules", "check", "--strict", str(rules))
    assert done.returncode == 1
    assert "warning: never matches" in done.stderr
    assert "OK" in done.stdout


def test_check_strict_of_clean_rules_exits_0():
    done = relay("rules", "check", "--strict", EXAMPLE)
    assert (done.returncode, done.stderr) == (0, "")


# -- JSON written as one template string ---------------------------------------------------

JSON_HEAD = """version: 1
destinations:
  crm:
    type: http
    url: https://crm.example/x
{options}
routes: [{{name: all, to: [crm]}}]
"""


def _destination_warnings(options: str) -> list[str]:
    text = JSON_HEAD.format(options=options)
    ruleset = load_rules_text(text, "rules.yaml", env={})
    return [warning.format("rules.yaml") for warning in lint(ruleset, lines_of(text))]


STRING_JSON = (
    "warning: a JSON body written as one template string: event data in "
    "{{ … }} can add keys or break the JSON; write it as a YAML mapping or list "
    "(a structured body), or pass each value through tojson"
)


@pytest.mark.parametrize(
    "options",
    [
        """    body: '{"campaign": "{{ event.callback.campaign }}"}'""",
        """    body: '[{"to": "{{ event.destination }}"}]'""",
        """    headers: {Content-Type: application/json}\n    body: '{{ event.status }}'""",
        """    body: |\n      {"status": "{{ event.status }}",\n       "code": {{ event.code }}}""",
    ],
)
def test_a_json_body_written_as_a_template_string_is_a_warning(options):
    line = 7 if "headers" in options else 6
    assert _destination_warnings(options) == [
        f"rules.yaml:{line}: destinations.crm.body: {STRING_JSON}"
    ]


@pytest.mark.parametrize(
    "options",
    [
        "    body: event",
        "    body: raw",
        "    body: '{{ event | tojson }}'",
        """    body: '{"text": {{ event.text | tojson }}, "n": 1}'""",
        "    body: 'SMS {{ event.status }} to {{ event.destination | mask }}'",
        "    body: '[ALERT] {{ event.status }}'",
        """    body: {campaign: "{{ event.callback.campaign }}"}""",
        """    headers: {Content-Type: text/plain}\n    body: '{"a": "{{ event.status }}"}'""",
    ],
)
def test_safe_or_structured_or_plain_text_bodies_are_not_warned_about(options):
    assert _destination_warnings(options) == []


def test_slack_blocks_written_as_a_template_string_are_a_warning():
    text = """version: 1
destinations:
  ops:
    type: slack
    webhook_url: https://hooks.slack.test/x
    text: x
    blocks: '[{"type": "section", "text": {"type": "mrkdwn", "text": "{{ event.status }}"}}]'
routes: [{name: all, to: [ops]}]
"""
    ruleset = load_rules_text(text, "rules.yaml", env={})
    assert [w.format("rules.yaml") for w in lint(ruleset, lines_of(text))] == [
        "rules.yaml:7: destinations.ops.blocks: warning: Slack blocks written as one template "
        "string: event data in {{ … }} can add blocks or break the JSON; write them as a YAML "
        "list (structured blocks), or pass each value through tojson"
    ]
