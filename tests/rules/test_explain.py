"""Explain: why each route matched or not, from tables, and always in step with match()."""

from __future__ import annotations

import json
import random

import pytest

from relay.rules import load_rules_text
from relay.rules.explain import MATCHED, RouteExplanation, check, explain
from tests.cli.test_rules_commands import EXAMPLE, relay
from tests.harness import FIXTURES
from tests.rules.test_matcher import (
    CASES,
    INBOUND,
    RECEIPT,
    RULES,
    _random_event,
    _random_ruleset,
)

# (condition, event, the first condition that fails, with the value seen)
FAILURES = [
    ({"kind": "inbound_message"}, RECEIPT, "kind: 'delivery_receipt' != 'inbound_message'"),
    (
        {"status": ["Failed", "Delivered"]},
        RECEIPT,
        "status: 'Un-Delivered' not in ['Failed', 'Delivered']",
    ),
    ({"code": 7103}, RECEIPT, "code: '7102' != 7103"),
    ({"final": False}, RECEIPT, "final: true != false"),
    ({"code": {"equals": "7103"}}, RECEIPT, "code: '7102' != '7103'"),
    ({"code": {"in": ["7101"]}}, RECEIPT, "code: '7102' not in ['7101']"),
    ({"code": {"not": "7102"}}, RECEIPT, "code: '7102' == '7102' (excluded by not)"),
    (
        {"code": {"not": ["7102", "7109"]}},
        RECEIPT,
        "code: '7102' in ['7102', '7109'] (excluded by not)",
    ),
    (
        {"code": {"not": {"prefix": "71"}}},
        RECEIPT,
        "code: '7102' starts with '71' (excluded by not)",
    ),
    (
        {"status": {"not": "undelivered"}},
        RECEIPT,
        "status: 'Un-Delivered' == 'undelivered' (excluded by not)",
    ),
    (
        {"destination": {"prefix": "1"}},
        RECEIPT,
        "destination: '447700900123' does not start with '1'",
    ),
    (
        {"destination": {"prefix": ["1", "33"]}},
        RECEIPT,
        "destination: '447700900123' does not start with any of ['1', '33']",
    ),
    (
        {"destination": {"suffix": "999"}},
        RECEIPT,
        "destination: '447700900123' does not end with '999'",
    ),
    (
        {"description": {"contains": "Address"}},
        RECEIPT,
        "description: 'Invalid address' does not contain 'Address'",
    ),
    (
        {"text": {"regex": "^me"}},
        INBOUND,
        "text: 'help me {{ 7*7 }}' does not match regex '^me'",
    ),
    ({"code": {"range": [7103, 7199]}}, RECEIPT, "code: '7102' not in range [7103, 7199]"),
    (
        {"status": {"range": [0, 10]}},
        RECEIPT,
        "status: 'Un-Delivered' is not a number (range [0, 10])",
    ),
    ({"callback.campaign": {"exists": True}}, INBOUND, "callback.campaign: missing"),
    (
        {"callback.campaign": {"exists": False}},
        RECEIPT,
        "callback.campaign: 'spring' exists (exists: false)",
    ),
    ({"keyword": "HELP"}, RECEIPT, "keyword: missing"),
    ({"keyword": {"prefix": "H"}}, RECEIPT, "keyword: missing"),
    ({"callback.campaign": "summer"}, RECEIPT, "callback.campaign: 'spring' != 'summer'"),
    ({"raw.items.1.sku": "A1"}, RECEIPT, "raw.items.1.sku: 'B2' != 'A1'"),
    ({"raw.meta.retries": {"range": [4, 9]}}, RECEIPT, "raw.meta.retries: '3' not in range [4, 9]"),
    ({"code": {"prefix": "71", "suffix": "03"}}, RECEIPT, "code: '7102' does not end with '03'"),
    (
        {"kind": "delivery_receipt", "code": "7103", "status": "Failed"},
        RECEIPT,
        "code: '7102' != '7103'",
    ),
    (
        {"any": [{"kind": "inbound_message"}, {"code": "7103"}]},
        RECEIPT,
        "any: none held ([0] kind: 'delivery_receipt' != 'inbound_message'; "
        "[1] code: '7102' != '7103')",
    ),
    (
        {"all": [{"kind": "delivery_receipt"}, {"code": "7103"}]},
        RECEIPT,
        "all[1]: code: '7102' != '7103'",
    ),
    (
        {"not": {"kind": "delivery_receipt", "code": "7102"}},
        RECEIPT,
        "not: held (kind: 'delivery_receipt' == 'delivery_receipt'; code: '7102' == '7102')",
    ),
    (
        {"kind": "delivery_receipt", "not": {"any": [{"code": "7102"}, {"final": False}]}},
        RECEIPT,
        "not: held (any[0]: code: '7102' == '7102')",
    ),
    (
        {"not": {"not": {"kind": "inbound_message"}}},
        RECEIPT,
        "not: held (not: kind: 'delivery_receipt' != 'inbound_message')",
    ),
    (
        {"not": {"all": [{"kind": "delivery_receipt"}, {"code": {"exists": True}}]}},
        RECEIPT,
        "not: held (all[0]: kind: 'delivery_receipt' == 'delivery_receipt'; all[1]: code: exists)",
    ),
    (
        {"text": "short"},
        {**INBOUND, "text": "x" * 100},
        f"text: '{'x' * 58}… != 'short'",
    ),
    ({"callback": "x"}, RECEIPT, "callback: {campaign: 'spring', cust: '42'} != 'x'"),
]


@pytest.mark.parametrize(("spec", "event", "message"), FAILURES)
def test_first_failing_condition_is_named_with_the_value_seen(spec, event, message):
    assert check(spec, event) == (False, message)


@pytest.mark.parametrize(
    ("spec", "event", "message"),
    [
        ({"code": {"not": ["7109"]}}, RECEIPT, "code: '7102' not in ['7109']"),
        ({"keyword": {"not": "HELP"}}, RECEIPT, "keyword: missing"),
        ({"keyword": {"exists": False}}, RECEIPT, "keyword: missing"),
        ({"any": [{"code": "1"}, {"code": "7102"}]}, RECEIPT, "any[1]: code: '7102' == '7102'"),
        (
            {"code": {"prefix": "71", "range": [7100, 7199]}},
            RECEIPT,
            "code: '7102' starts with '71' and '7102' in range [7100, 7199]",
        ),
        ({}, RECEIPT, "matches every event"),
    ],
)
def test_a_holding_condition_says_why(spec, event, message):
    assert check(spec, event) == (True, message)


@pytest.mark.parametrize(("spec", "event", "expected"), CASES)
def test_explain_agrees_with_the_matcher_table(spec, event, expected):
    assert check(spec, event).holds is expected


def _lines(event, rules=RULES):
    return [str(item) for item in explain(load_rules_text(rules, env={}), event)]


def test_every_route_is_listed_with_its_outcome():
    assert _lines({**RECEIPT, "status": "Delivered"}) == [
        "routes[0] failures: status: 'Delivered' not in ['Failed', 'Un-Delivered']",
        "routes[1] campaigns: matched (continue)",
        "routes[2] spring: matched",
        "routes[3] help: not tried (an earlier route matched)",
        "default: not used (a route matched)",
    ]


def test_the_default_is_shown_used_when_nothing_matched():
    assert _lines({**RECEIPT, "status": "Delivered", "callback": {}}) == [
        "routes[0] failures: status: 'Delivered' not in ['Failed', 'Un-Delivered']",
        "routes[1] campaigns: callback.campaign: missing",
        "routes[2] spring: callback.campaign: missing",
        "routes[3] help: kind: 'delivery_receipt' != 'inbound_message'",
        "default: used (no route matched)",
    ]


def test_without_a_default_there_is_no_default_line():
    rules = RULES.replace("default: {to: [crm]}", "")
    assert _lines(INBOUND, rules)[-1] == "routes[3] help: matched"


def test_explanations_are_plain_data_for_json():
    first = explain(load_rules_text(RULES, env={}), RECEIPT)[0]
    assert first.to_dict() == {
        "where": "routes[0]",
        "route": "failures",
        "outcome": "matched",
        "reason": "",
    }
    assert RouteExplanation(**first.to_dict()) == first


@pytest.mark.parametrize("seed", range(20))
def test_explain_matches_exactly_what_match_matches(seed):
    rnd = random.Random(seed)
    ruleset = _random_ruleset(rnd)
    for _ in range(40):
        event = _random_event(rnd)
        explained = explain(ruleset, event)
        matched = [item.route for item in explained if item.outcome == MATCHED]
        assert matched == [hit.route for hit in ruleset.match(event)]
        for route in ruleset.routes:
            assert check(route.match, event).holds is route.condition.test(event)


def test_cli_explain_shows_every_route():
    event = str(FIXTURES / "receipt-delivered.json")
    done = relay("rules", "test", EXAMPLE, "--event", event, "--explain")
    assert done.returncode == 0, done.stderr
    assert (
        "  explain:\n"
        "    routes[0] failures: status: 'Delivered' not in ['Failed', 'Un-Delivered']\n"
        "    routes[1] inbound: kind: 'delivery_receipt' != 'inbound_message'\n"
        "    default: used (no route matched)\n"
    ) in done.stdout


def test_cli_explain_in_json_per_route():
    event = str(FIXTURES / "inbound-sms.json")
    done = relay("rules", "test", EXAMPLE, "--event", event, "--explain", "--json")
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)
    assert report["explain"] == [
        {
            "where": "routes[0]",
            "route": "failures",
            "outcome": "failed",
            "reason": "kind: 'inbound_message' != 'delivery_receipt'",
        },
        {"where": "routes[1]", "route": "inbound", "outcome": "matched", "reason": ""},
        {
            "where": "default",
            "route": "default",
            "outcome": "not_used",
            "reason": "a route matched",
        },
    ]
