"""Rule test cases: a YAML file of payloads and expected routes, run as CI would run it."""

from __future__ import annotations

import json

import pytest

from relay.errors import CasesError
from relay.rules import load_rules_text
from relay.rules.cases import load_cases, read_cases, run_case, run_cases, summary
from tests.cli.test_rules_commands import EXAMPLE, relay
from tests.harness import ROOT
from tests.rules.test_matcher import RULES

CASES_FILE = ROOT / "config" / "cases.yaml"
RECEIPT = "{deliveryInfoNotification: {deliveryInfo: {deliveryStatus: %s, code: '%s'}}}"
FAILED = RECEIPT % ("Failed", "7102")
DELIVERED = RECEIPT % ("Delivered", "7500")
HELP = "{oa: '441157070619', da: '12345', message: 'help!'}"


def _results(cases_yaml: str, rules: str = RULES) -> list[str]:
    ruleset = load_rules_text(rules, env={})
    return [str(result) for result in run_cases(ruleset, read_cases(cases_yaml, env={}))]


def _errors(cases_yaml: str, base: str = ".") -> list[str]:
    with pytest.raises(CasesError) as caught:
        read_cases(cases_yaml, "cases.yaml", base, env={})
    return caught.value.errors


@pytest.mark.parametrize(
    ("case", "line"),
    [
        (f"name: failed\n  payload: {FAILED}\n  routes: [failures]", "PASS  failed"),
        (
            f"name: failed\n  payload: {FAILED}\n  destinations: [crm, ops]",
            "PASS  failed",
        ),
        (
            f"name: help\n  payload: {HELP}\n  routes: help\n  destinations: [help-reply]",
            "PASS  help",
        ),
        (f"name: d\n  payload: {DELIVERED}\n  routes: [default]", "PASS  d"),
        (f"name: d\n  payload: {DELIVERED}\n  unrouted: false", "PASS  d"),
        (
            f"name: help keyword\n  payload: {HELP}\n  routes: [inbound]",
            "FAIL  help keyword: routes ['help'] != expected ['inbound']; "
            "no route 'inbound' in the rules",
        ),
        (
            f"name: failed\n  payload: {FAILED}\n  destinations: [ops]",
            "FAIL  failed: destinations ['crm', 'ops'] != expected ['ops']",
        ),
        (
            f"name: d\n  payload: {DELIVERED}\n  unrouted: true",
            "FAIL  d: routed to ['default'], expected unrouted",
        ),
        (
            f"name: batch\n  payload: [{FAILED}, {DELIVERED}]\n  routes: [failures]",
            "FAIL  batch: event [1]: routes ['default'] != expected ['failures']",
        ),
        (
            f"name: typo\n  payload: {FAILED}\n  routes: [failure]\n  destinations: [crn]",
            "FAIL  typo: routes ['failures'] != expected ['failure']; destinations ['crm', "
            "'ops'] != expected ['crn']; no route 'failure' in the rules (did you mean "
            "'failures'?); no destination 'crn' in the rules (did you mean 'crm'?)",
        ),
    ],
)
def test_a_case_passes_or_says_what_differs(case, line):
    assert _results(f"- {case}\n") == [line]


def test_unrouted_means_no_route_and_no_default():
    rules = RULES.replace("default: {to: [crm]}", "")
    cases = f"- name: d\n  payload: {DELIVERED}\n  unrouted: true\n"
    cases += f"- name: f\n  payload: {FAILED}\n  unrouted: true\n"
    cases += f"- name: g\n  payload: {DELIVERED}\n  unrouted: false\n"
    assert _results(cases, rules) == [
        "PASS  d",
        "FAIL  f: routed to ['failures'], expected unrouted",
        "FAIL  g: unrouted, expected a route",
    ]


def test_source_and_own_numbers_shape_the_event():
    rules = RULES.replace(
        "routes:\n",
        "routes:\n  - {name: shop, match: {source: shop, sender: '12345'}, to: [trace]}\n",
    )
    cases = (
        f"- name: own\n  payload: {HELP}\n  source: shop\n  own_numbers: ['+44 1157070619']\n"
        "  routes: [shop]\n"
        f"- name: not own\n  payload: {HELP}\n  source: shop\n  routes: [help]\n"
    )
    assert _results(cases, rules) == ["PASS  own", "PASS  not own"]


def test_payload_file_is_relative_to_the_cases_file(tmp_path):
    (tmp_path / "payloads").mkdir()
    (tmp_path / "payloads" / "help.json").write_text(json.dumps({"oa": "1", "da": "2"}))
    (tmp_path / "payloads" / "ok.json").write_text('{"oa": "1", "da": "2", "message": "info"}')
    path = tmp_path / "cases.yaml"
    path.write_text("- {name: file, payload_file: payloads/ok.json, routes: [help]}\n")
    (case,) = load_cases(str(path))
    assert run_case(load_rules_text(RULES, env={}), case).passed
    path.write_text("- {name: file, payload_file: payloads/help.json, routes: [help]}\n")
    with pytest.raises(CasesError) as caught:
        load_cases(str(path))
    assert caught.value.errors == [
        f"{path}:1: cases[0].payload_file: payloads/help.json: message: Missing data for "
        "required field."
    ]


def test_summary_counts_passes_and_failures():
    ruleset = load_rules_text(RULES, env={})
    cases = read_cases(
        f"- {{name: a, payload: {FAILED}, routes: [failures]}}\n"
        f"- {{name: b, payload: {FAILED}, routes: [help]}}\n",
        env={},
    )
    assert summary(run_cases(ruleset, cases)) == "1 passed, 1 failed"


ERRORS = [
    ("{name: x}", ["cases.yaml:1: cases: expected a non-empty list of cases"]),
    ("[]", ["cases.yaml:1: cases: expected a non-empty list of cases"]),
    ("- [1]", ["cases.yaml:1: cases[0]: expected a mapping with name, payload and expectations"]),
    (
        f"- name: a\n  payload: {FAILED}\n  route: [failures]\n",
        [
            "cases.yaml:1: cases[0]: no expectation: give routes, destinations or unrouted",
            "cases.yaml:3: cases[0].route: unknown key 'route' (did you mean 'routes'?)",
        ],
    ),
    (
        "- routes: [a]\n",
        [
            "cases.yaml:1: cases[0]: missing required key 'name'",
            "cases.yaml:1: cases[0]: missing required key 'payload' (or 'payload_file')",
        ],
    ),
    (
        f"- name: a\n  payload: {FAILED}\n  payload_file: x.json\n  unrouted: yes\n",
        [
            "cases.yaml:1: cases[0]: give payload or payload_file, not both",
            "cases.yaml:4: cases[0].unrouted: expected true or false",
        ],
    ),
    (
        "- name: a\n  payload: {oa: '1', da: '2'}\n  routes: [a, 1]\n",
        [
            "cases.yaml:2: cases[0].payload: message: Missing data for required field.",
            "cases.yaml:3: cases[0].routes: expected a name or a list of names",
        ],
    ),
    (
        "- name: a\n  payload: hello\n  destinations: {a: 1}\n",
        [
            "cases.yaml:2: cases[0].payload: expected the payload as a mapping (or a list of them)",
            "cases.yaml:3: cases[0].destinations: expected a name or a list of names",
        ],
    ),
    (
        f"- name: a\n  payload: {HELP}\n  source: 'no spaces'\n  own_numbers: [abc]\n"
        "  routes: [help]\n",
        [
            "cases.yaml:3: cases[0].source: expected 1-64 letters, digits, '.', '_' or '-'",
            "cases.yaml:4: cases[0].own_numbers: not a phone number or short code: 'abc'",
        ],
    ),
    (
        "- name: a\n  payload_file: missing.json\n  routes: [help]\n",
        [
            "cases.yaml:2: cases[0].payload_file: cannot read missing.json: "
            "No such file or directory"
        ],
    ),
    (
        f"- {{name: a, payload: {HELP}, routes: [help]}}\n"
        f"- {{name: a, payload: {HELP}, routes: [help]}}\n",
        ["cases.yaml:2: cases[1].name: duplicate case name 'a' (first at line 1)"],
    ),
    (
        "- {name: a, payload: {oa: 1}",
        [
            "cases.yaml:1: syntax: expected ',' or '}', but got '<stream end>' "
            "(while parsing a flow mapping at line 1)"
        ],
    ),
]


@pytest.mark.parametrize(("text", "errors"), ERRORS)
def test_problems_in_the_cases_file_are_reported_with_their_line(text, errors):
    assert _errors(text) == errors


def test_the_shipped_cases_cover_every_route_and_the_default():
    ruleset = load_rules_text((ROOT / "config" / "rules.yaml").read_text(), env={})
    results = run_cases(ruleset, load_cases(str(CASES_FILE), env={}))
    assert [str(result) for result in results if not result.passed] == []
    reached = {name for result in results for names in result.routes for name in names}
    assert reached == {route.name for route in ruleset.routes} | {"default"}


def test_cli_runs_the_shipped_cases_and_exits_0():
    done = relay("rules", "test", "config/rules.yaml", "--cases", "config/cases.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "PASS  failed receipt goes to the failures webhook"
    assert lines[-1] == f"{len(lines) - 1} passed, 0 failed"


def test_cli_fails_on_a_failing_case_and_explains_it_on_request(tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- {name: inbound, payload: {oa: '1', da: '2', message: hi}, routes: [inbound]}\n"
        "- {name: help keyword, payload: {oa: '1', da: '2', message: help}, routes: [help]}\n"
    )
    done = relay("rules", "test", EXAMPLE, "--cases", str(cases), "--explain")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "PASS  inbound",
        "FAIL  help keyword: routes ['inbound'] != expected ['help']; no route 'help' in the rules",
        "      routes[0] failures: kind: 'inbound_message' != 'delivery_receipt'",
        "      routes[1] inbound: matched",
        "      default: not used (a route matched)",
        "1 passed, 1 failed",
    ]


def test_cli_reports_cases_file_errors_and_exits_1(tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text("- {name: a, payload: {oa: '1'}, routes: [inbound]}\n")
    done = relay("rules", "test", EXAMPLE, "--cases", str(cases), "--json")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{cases}:1: cases[0].payload: da: Missing data for required field.",
        f"{cases}: 1 error(s)",
    ]


def test_cli_cases_as_json():
    done = relay("rules", "test", EXAMPLE, "--cases", str(CASES_FILE), "--json")
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)[0]
    assert first == {
        "name": "failed receipt goes to the failures webhook",
        "line": 8,
        "passed": True,
        "routes": [["failures"]],
        "failures": [],
    }


def test_cli_needs_event_or_cases():
    done = relay("rules", "test", EXAMPLE)
    assert done.returncode == 2
    assert "give --event FILE or --cases FILE" in done.stderr
