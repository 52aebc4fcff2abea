"""The rules matcher: conditions from tables of (condition, event, expected), then routes."""

from __future__ import annotations

import dataclasses
import random

import pytest
import yaml

from relay.errors import ConditionError
from relay.rules import load_rules_text
from relay.rules.matcher import compile_condition

RECEIPT = {
    "id": "01JRECEIPT",
    "kind": "delivery_receipt",
    "source": "default",
    "received_at": "2026-11-27T15:00:00.123Z",
    "status": "Un-Delivered",
    "final": True,
    "code": "7102",
    "code_description": "Invalid address",
    "description": "Invalid address",
    "additional_info": "",
    "destination": "447700900123",
    "channel": "SMS",
    "timestamp": "2022-10-10T13:53:13.749+01:00",
    "transid": "t-1",
    "subtid": "",
    "correlation_id": "",
    "callback_data": "campaign=spring;cust=42",
    "callback": {"campaign": "spring", "cust": "42"},
    "raw": {
        "deliveryStatus": "Un-Delivered",
        "code": 7102,
        "items": [{"sku": "A1"}, {"sku": "B2"}],
        "meta": {"retries": "3", "tags": None},
    },
}
INBOUND = {
    "id": "01JINBOUND",
    "kind": "inbound_message",
    "source": "shortcode",
    "received_at": "2026-11-27T15:00:00.123Z",
    "tid": "105eddec",
    "user_id": "9009",
    "network_id": "10",
    "timestamp": "2024-01-07T14:36:09.266Z",
    "channel": "sms",
    "sender": "441157070619",
    "recipient": "1XXXX661353",
    "text": "help me {{ 7*7 }}",
    "keyword": "HELP",
    "raw": {"message": "help me"},
}

CASES = [
    # scalars, lists, case and status rules
    ({"kind": "delivery_receipt"}, RECEIPT, True),
    ({"kind": "delivery_receipt"}, INBOUND, False),
    ({"kind": "DELIVERY_RECEIPT"}, RECEIPT, True),
    ({"status": "undelivered"}, RECEIPT, True),
    ({"status": "UN_DELIVERED"}, RECEIPT, True),
    ({"status": "un delivered"}, RECEIPT, True),
    ({"status": "delivered"}, RECEIPT, False),
    ({"status": ["Failed", "Un-Delivered"]}, RECEIPT, True),
    ({"status": ["Failed", "Delivered"]}, RECEIPT, False),
    ({"keyword": "help"}, INBOUND, True),
    ({"keyword": ["STOP", "Help"]}, INBOUND, True),
    ({"channel": "SMS"}, INBOUND, True),
    ({"text": "HELP ME {{ 7*7 }}"}, INBOUND, False),  # text keeps its case
    ({"destination": "447700900123"}, RECEIPT, True),
    # numbers compare as text, booleans as booleans
    ({"code": 7102}, RECEIPT, True),
    ({"code": "7102"}, RECEIPT, True),
    ({"code": 7102.0}, RECEIPT, True),
    ({"code": 7103}, RECEIPT, False),
    ({"code": [7101, 7102]}, RECEIPT, True),
    ({"raw.code": "7102"}, RECEIPT, True),
    ({"raw.code": 7102}, RECEIPT, True),
    ({"final": True}, RECEIPT, True),
    ({"final": False}, RECEIPT, False),
    ({"final": "true"}, RECEIPT, False),
    ({"final": 1}, RECEIPT, False),
    # nested paths
    ({"callback.campaign": "spring"}, RECEIPT, True),
    ({"callback.campaign": "summer"}, RECEIPT, False),
    ({"callback.cust": 42}, RECEIPT, True),
    ({"raw.items.1.sku": "B2"}, RECEIPT, True),
    ({"raw.items.2.sku": {"exists": True}}, RECEIPT, False),
    ({"raw.meta.retries": {"range": [1, 3]}}, RECEIPT, True),
    ({"raw.deliveryStatus": "undelivered"}, RECEIPT, False),  # only top-level status is loose
    ({"raw.meta.tags": {"exists": False}}, RECEIPT, True),
    ({"raw.items.sku": {"exists": True}}, RECEIPT, False),
    # operators
    ({"code": {"equals": "7102"}}, RECEIPT, True),
    ({"code": {"in": ["7101", "7102"]}}, RECEIPT, True),
    ({"code": {"in": ["7101"]}}, RECEIPT, False),
    ({"code": {"not": "7109"}}, RECEIPT, True),
    ({"code": {"not": ["7102", "7109"]}}, RECEIPT, False),
    ({"code": {"not": {"prefix": "71"}}}, RECEIPT, False),
    ({"destination": {"prefix": "44"}}, RECEIPT, True),
    ({"destination": {"prefix": ["1", "44"]}}, RECEIPT, True),
    ({"destination": {"prefix": "1"}}, RECEIPT, False),
    ({"destination": {"suffix": "0123"}}, RECEIPT, True),
    ({"destination": {"suffix": ["999", "123"]}}, RECEIPT, True),
    ({"description": {"contains": "address"}}, RECEIPT, True),
    ({"description": {"contains": "Address"}}, RECEIPT, False),
    ({"status": {"contains": "undeliv"}}, RECEIPT, True),
    ({"status": {"prefix": "UN"}}, RECEIPT, True),
    ({"raw.code": {"prefix": "71"}}, RECEIPT, True),
    ({"text": {"regex": r"\bme\b"}}, INBOUND, True),
    ({"text": {"regex": "^me"}}, INBOUND, False),
    ({"status": {"regex": "^un-del"}}, RECEIPT, True),
    ({"keyword": {"regex": "^h"}}, INBOUND, True),
    ({"code": {"range": [7100, 7199]}}, RECEIPT, True),
    ({"code": {"range": [7102, 7102]}}, RECEIPT, True),
    ({"code": {"range": [7103, 7199]}}, RECEIPT, False),
    ({"code": {"range": [7000.5, 7102.5]}}, RECEIPT, True),
    ({"status": {"range": [0, 10]}}, RECEIPT, False),  # not a number
    ({"final": {"range": [0, 10]}}, RECEIPT, False),  # booleans are not numbers
    ({"callback.campaign": {"exists": True}}, RECEIPT, True),
    ({"callback.campaign": {"exists": False}}, RECEIPT, False),
    ({"code": {"prefix": "71", "suffix": "02"}}, RECEIPT, True),
    ({"code": {"prefix": "71", "suffix": "03"}}, RECEIPT, False),
    # combinators
    ({"any": [{"kind": "inbound_message"}, {"code": "7102"}]}, RECEIPT, True),
    ({"any": [{"kind": "inbound_message"}, {"code": "7103"}]}, RECEIPT, False),
    ({"all": [{"kind": "delivery_receipt"}, {"code": "7102"}]}, RECEIPT, True),
    ({"all": [{"kind": "delivery_receipt"}, {"code": "7103"}]}, RECEIPT, False),
    ({"not": {"kind": "inbound_message"}}, RECEIPT, True),
    ({"not": {"kind": "delivery_receipt", "code": "7102"}}, RECEIPT, False),
    (
        {"kind": "delivery_receipt", "not": {"any": [{"code": "7109"}, {"final": False}]}},
        RECEIPT,
        True,
    ),
    ({}, RECEIPT, True),
    (None, INBOUND, True),
    # a missing field (or None) matches only exists: false and not
    ({"keyword": "HELP"}, RECEIPT, False),
    ({"keyword": ["HELP"]}, RECEIPT, False),
    ({"keyword": {"prefix": "H"}}, RECEIPT, False),
    ({"keyword": {"regex": ""}}, RECEIPT, False),
    ({"keyword": {"range": [0, 1]}}, RECEIPT, False),
    ({"keyword": {"exists": True}}, RECEIPT, False),
    ({"keyword": {"exists": False}}, RECEIPT, True),
    ({"keyword": {"not": "HELP"}}, RECEIPT, True),
    ({"code": {"not": ["7109"]}}, INBOUND, True),
    ({"callback.campaign": {"exists": False}}, INBOUND, True),
    ({"code": {"exists": False}}, {"kind": "delivery_receipt", "code": None}, True),
    ({"code": "None"}, {"kind": "delivery_receipt", "code": None}, False),
    ({"callback.campaign": "x"}, {"callback": "not a mapping"}, False),
]


@pytest.mark.parametrize(("spec", "event", "expected"), CASES)
def test_condition_matches_event_as_the_table_says(spec, event, expected):
    assert compile_condition(spec).test(event) is expected


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        (
            {"code": {"rnage": [1, 2]}},
            ("code",),
            "unknown operator 'rnage' (did you mean 'range'?)",
        ),
        ({"stauts": "x"}, (), "unknown field 'stauts' (did you mean 'status'?)"),
        ({"code.x": 1}, (), "field 'code' has no sub-fields (only callback and raw)"),
        ({"code": {"range": ["a", 2]}}, ("code",), "range takes [lo, hi] numbers, got ['a', 2]"),
        ({"code": {"range": [2, 1]}}, ("code",), "range [2, 1] is empty (lo > hi)"),
        (
            {"code": {"regex": "("}},
            ("code",),
            "bad regex '(': missing ): (",
        ),
        ({"code": {"exists": "yes"}}, ("code",), "exists takes true or false"),
        ({"code": {"in": "7102"}}, ("code",), "in takes a non-empty list of values"),
        ({"code": {"equals": [1]}}, ("code",), "equals takes one value (in: takes a list)"),
        ({"code": {}}, ("code",), "no operator given"),
        ({"code": []}, ("code",), "expected a non-empty list of values"),
        ({"any": []}, ("any",), "any takes a non-empty list of conditions"),
        ({"not": ["x"]}, ("not",), "expected a mapping of conditions"),
        (
            {"text": {"prefix": True}},
            ("text",),
            "prefix takes a string or a non-empty list of strings",
        ),
    ],
)
def test_bad_condition_is_rejected_with_its_place(spec, where, message):
    with pytest.raises(ConditionError) as caught:
        compile_condition(spec)
    assert [(p.where, p.message) for p in caught.value.problems] == [(where, message)]


def test_condition_reports_every_problem_with_the_node_at_fault():
    spec = {"code": {"rnage": [1, 2], "regex": "("}, "any": [{"stauts": 1}]}
    with pytest.raises(ConditionError) as caught:
        compile_condition(spec)
    assert [p.at for p in caught.value.problems] == [
        ("code", "rnage"),
        ("code", "regex"),
        ("any", 0, "stauts"),
    ]


RULES = """
version: 1
destinations:
  crm: {type: http, url: "https://crm.example.com/hook", retry: {attempts: 3}}
  ops: {type: log}
  help-reply: {type: sms_reply, text: "Reply STOP to opt out."}
  trace: {type: log}
routes:
  - name: failures
    match: {kind: delivery_receipt, status: [Failed, Un-Delivered], code: {not: ["7109"]}}
    to: [ops, crm]
    retry: {attempts: 5, initial: 1s, max: 1m}
  - name: campaigns
    match: {callback.campaign: {exists: true}}
    to: [crm, trace]
    continue: true
  - name: spring
    match: {callback.campaign: spring}
    to: [trace]
  - name: help
    match: {kind: inbound_message, keyword: [HELP, INFO]}
    to: help-reply
default: {to: [crm]}
"""


def _routes(event, **changes):
    ruleset = load_rules_text(RULES, env={})
    return [(hit.route, hit.destinations) for hit in ruleset.match({**event, **changes})]


def test_first_matching_route_wins():
    assert _routes(RECEIPT) == [("failures", ("ops", "crm"))]


def test_continue_keeps_trying_and_each_destination_gets_the_event_once():
    delivered = {"status": "Delivered"}
    assert _routes(RECEIPT, **delivered) == [("campaigns", ("crm", "trace")), ("spring", ())]


def test_route_without_continue_stops_after_continuing_route():
    assert _routes(RECEIPT, status="Delivered", callback={"campaign": "autumn"}) == [
        ("campaigns", ("crm", "trace"))
    ]


def test_default_applies_only_when_nothing_matched():
    assert _routes(RECEIPT, status="Delivered", callback={}) == [("default", ("crm",))]
    assert _routes(INBOUND) == [("help", ("help-reply",))]
    assert _routes(INBOUND, keyword="JOIN") == [("default", ("crm",))]


def test_no_default_means_no_match():
    ruleset = load_rules_text(RULES.replace("default: {to: [crm]}", ""), env={})
    assert ruleset.match({"kind": "other"}) == []


def test_retry_of_route_overrides_destination_and_defaults_fill_the_rest():
    ruleset = load_rules_text(RULES, env={})
    (failures,) = ruleset.match(RECEIPT)
    assert {name: dataclasses.astuple(p) for name, p in failures.retry.items()} == {
        "ops": (5, 1.0, 60.0),
        "crm": (5, 1.0, 60.0),
    }
    (default,) = ruleset.match({"kind": "other"})
    assert dataclasses.astuple(default.retry["crm"]) == (3, 2.0, 1800.0)
    (help_hit,) = ruleset.match(INBOUND)
    assert dataclasses.astuple(help_hit.retry["help-reply"]) == (20, 2.0, 1800.0)


def test_routes_using_lists_every_route_to_a_destination():
    ruleset = load_rules_text(RULES, env={})
    assert [route.name for route in ruleset.routes_using("crm")] == [
        "failures",
        "campaigns",
        "default",
    ]


# --- the index must give exactly what testing every route in order gives ---------------

_VALUES = {
    "kind": ["delivery_receipt", "inbound_message", "Delivery_Receipt"],
    "status": ["Delivered", "Un-Delivered", "undelivered", "Failed", "Submitted"],
    "code": ["7102", "7109", 7102, "1000"],
    "keyword": ["HELP", "stop", "Stop", "JOIN"],
    "source": ["default", "shop", "bank"],
    "channel": ["SMS", "sms", "WhatsApp"],
    "final": [True, False],
    "callback.campaign": ["spring", "summer"],
}


def _random_test(rnd: random.Random, name: str):
    values = _VALUES[name]
    form = rnd.randrange(6)
    if form == 0:
        return rnd.choice(values)
    if form == 1:
        return rnd.sample(values, rnd.randint(1, 2))
    if form == 2:
        return {"equals": rnd.choice(values)}
    if form == 3:
        return {"in": rnd.sample(values, 2), "not": rnd.choice(values)}
    if form == 4:
        return {"exists": rnd.choice([True, False])}
    return {"not": rnd.sample(values, 1)}


def _random_match(rnd: random.Random, depth: int = 0):
    match = {}
    for name in rnd.sample(sorted(_VALUES), rnd.randint(0, 3)):
        match[name] = _random_test(rnd, name)
    if depth < 2 and rnd.random() < 0.2:
        match[rnd.choice(["any", "all"])] = [_random_match(rnd, depth + 1) for _ in range(2)]
    if depth < 2 and rnd.random() < 0.1:
        match["not"] = _random_match(rnd, depth + 1) or {"kind": "x"}
    return match


def _random_event(rnd: random.Random):
    event: dict = {"callback": {}}
    for name, values in _VALUES.items():
        if rnd.random() < 0.8:
            value = rnd.choice(values)
            if name == "callback.campaign":
                event["callback"]["campaign"] = value
            else:
                event[name] = value
    return event


def _random_ruleset(rnd: random.Random):
    routes = [
        {"name": f"r{i}", "match": _random_match(rnd), "to": [rnd.choice(["a", "b", "c"])]}
        for i in range(rnd.randint(1, 30))
    ]
    for route in routes:
        route["continue"] = rnd.random() < 0.3
    data = {
        "version": 1,
        "destinations": {name: {"type": "log"} for name in "abc"},
        "routes": routes,
        "default": {"to": ["a"]},
    }
    return load_rules_text(yaml.safe_dump(data, sort_keys=False), env={})


def _reference_match(ruleset, event):
    """The README's routing rule, literally: every route in order, first wins unless continue."""
    names = []
    for route in ruleset.routes:
        if route.condition.test(event):
            names.append(route.name)
            if not route.continue_:
                break
    return names or ["default"]


@pytest.mark.parametrize("seed", range(40))
def test_indexed_matching_equals_testing_every_route(seed):
    rnd = random.Random(seed)
    ruleset = _random_ruleset(rnd)
    unindexed = dataclasses.replace(ruleset, indexed=False)
    for _ in range(60):
        event = _random_event(rnd)
        expected = _reference_match(ruleset, event)
        assert [hit.route for hit in ruleset.match(event)] == expected
        assert ruleset.match(event) == unindexed.match(event)


def test_frozen_match_spec_compiles_to_the_same_condition():
    ruleset = load_rules_text(RULES, env={})
    for route in ruleset.routes:
        again = compile_condition(route.match)
        for event in (RECEIPT, INBOUND, {**RECEIPT, "status": "Delivered"}):
            assert again.test(event) == route.condition.test(event)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("(a)\\1", "invalid escape sequence: \\1"), ("(?<=a)b", "invalid perl operator: (?<=")],
)
def test_regex_features_re2_lacks_are_load_errors(pattern, reason):
    with pytest.raises(ConditionError) as error:
        compile_condition({"text": {"regex": pattern}})
    assert f"bad regex {pattern!r}: {reason}" in str(error.value)


def test_a_pattern_that_backtracks_exponentially_elsewhere_answers_at_once():
    """Python's re needs hours for this pattern on this text (the time doubles with each
    character); RE2 matches in linear time, so the test ends at all."""
    condition = compile_condition({"text": {"regex": "^(\\w+\\s?)+$"}})
    assert not condition.test({"text": "a" * 60 + "!"})
    assert condition.test({"text": "hello world"})


def test_a_lone_surrogate_in_text_does_not_stop_a_regex():
    condition = compile_condition({"text": {"regex": "stop"}})
    assert condition.test({"text": "\ud800 stop"})
