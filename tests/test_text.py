"""One rule for text: a lone surrogate becomes U+FFFD at the door and in every template
output, so nothing after them holds text UTF-8 cannot carry."""

from __future__ import annotations

import json

import pytest

from relay.parsing import build_events, decode
from relay.rules import load_rules_text
from relay.rules.payloads import Structured
from relay.rules.templates import compile_template
from relay.samples import SAMPLE_INBOUND, SAMPLE_RECEIPT
from relay.text import may_hold_surrogates, valid, valid_text

BAD = "X\ud800Y"
GOOD = "X\ufffdY"

RECEIPT_INFO = [
    "deliveryStatus",
    "code",
    "Description",
    "additionalInfo",
    "destination",
    "destinationType",
    "deliveryChannel",
    "timeStamp",
]
RECEIPT_TOP = ["transid", "subtid", "correlationid", "callbackData"]
INBOUND = ["oa", "da", "message", "tid", "userId", "channel", "x_networkid", "datetime", "ts"]


def receipt_with(field: str, value: str) -> dict:
    notification = json.loads(json.dumps(SAMPLE_RECEIPT))
    body = notification["deliveryInfoNotification"]
    (body["deliveryInfo"] if field in RECEIPT_INFO else body)[field] = value
    return notification


def documents_with(value: str) -> list[tuple[str, object]]:
    """(field, notification) for each documented string field holding ``value``."""
    receipts = [(f, receipt_with(f, value)) for f in RECEIPT_INFO + RECEIPT_TOP]
    return receipts + [(f, {**SAMPLE_INBOUND, f: value}) for f in INBOUND]


def escaped(document: object) -> bytes:
    """The JSON text as a sender writes it: the surrogate as a ``\\ud800`` escape."""
    body = json.dumps(document).encode()
    assert b"\\ud800" in body
    return body


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(k) + strings(v)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def encodable(event: object) -> bool:
    return all(text.encode("utf-8") is not None for text in strings(event))


@pytest.mark.parametrize(("field", "document"), documents_with(BAD))
def test_a_lone_surrogate_in_any_documented_field_is_replaced_at_the_door(field, document):
    (event,), _ = build_events(decode(escaped(document)), "default", frozenset())
    assert encodable(event), field
    text = json.dumps(event, ensure_ascii=False)
    assert GOOD in text and "\ud800" not in text


def test_keys_and_nested_values_of_the_raw_payload_are_replaced_too():
    body = escaped([{**SAMPLE_INBOUND, "extra": {BAD: [BAD, {"k": BAD}]}}])
    ((event,), _) = build_events(decode(body), "default", frozenset())
    assert event["raw"]["extra"] == {GOOD: [GOOD, {"k": GOOD}]}


def test_utf8_bytes_of_a_surrogate_are_replaced_like_its_escape():
    body = b'{"oa": "1", "da": "2", "message": "a\xed\xa0\x80b"}'
    assert decode(body) == {"oa": "1", "da": "2", "message": "a\ufffdb"}


def test_a_pair_of_escapes_is_the_character_it_stands_for():
    assert decode(b'["\\ud83d\\ude00", "\\uD83D"]') == ["\U0001f600", "\ufffd"]


def test_a_utf16_body_with_a_lone_surrogate_is_replaced():
    body = json.dumps({"oa": "1", "da": "2", "message": BAD}, ensure_ascii=False)
    assert decode(body.encode("utf-16", "surrogatepass"))["message"] == GOOD


@pytest.mark.parametrize(
    ("callback", "expected"),
    [
        ('{"a": "X\\ud800Y", "X\\udfffY": 1}', {"a": GOOD, GOOD: 1}),
        ("a=X%ED%A0%80Y", {"a": "X\ufffd\ufffd\ufffdY"}),  # not UTF-8: replaced by parse_qsl
    ],
)
def test_callback_data_read_as_json_or_pairs_holds_valid_text(callback, expected):
    (event,), _ = build_events(receipt_with("callbackData", callback), "default", frozenset())
    assert event["callback"] == expected


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e999", "-1e999"])
def test_callback_data_with_a_number_json_cannot_store_reads_as_nothing(number):
    callback = '{"a": ' + number + "}"
    (event,), _ = build_events(receipt_with("callbackData", callback), "default", frozenset())
    assert event["callback"] == {}
    assert event["callback_error"].startswith("callbackData: ")
    json.dumps(event, allow_nan=False)  # storable, as the worker stores it


@pytest.mark.parametrize(
    "source",
    [
        "{{ '\\ud800' }}",  # a Jinja literal with a lone surrogate escape
        "{{ '%c' | format(55296) }}",  # a filter making one
        "{{ event.text }}",  # an event holding one (not through the door)
        "X\ud800Y",  # constant text (a YAML escape in the rules file)
    ],
)
def test_no_template_output_holds_a_lone_surrogate(source):
    template = compile_template(source)
    out = template.render({"text": BAD}, "route", "dest")
    assert out.encode("utf-8") and "\ufffd" in out


def test_a_structured_body_holds_valid_text_everywhere():
    ruleset = load_rules_text(
        """
version: 1
destinations:
  hook:
    type: http
    url: http://127.0.0.1:1/
    body: {a: "{{ event.text }}", b: "{{ event.raw | tojson }}", c: "{{ '\\\\ud800' }}"}
routes: [{name: all, to: [hook]}]
"""
    )
    body = ruleset.destinations["hook"].body
    assert isinstance(body, Structured)
    rendered = body.render({"text": BAD, "raw": {BAD: BAD}}, "all", "hook")
    assert rendered == {"a": GOOD, "b": {GOOD: GOOD}, "c": "\ufffd"}


def test_valid_keeps_the_same_objects_when_nothing_changes():
    document = {"a": ["b", {"c": "é"}], "n": 1}
    assert valid(document) is document
    assert valid_text("plain") == "plain"


@pytest.mark.parametrize(
    "body",
    [b'"\\ud800"', b'"\\uDFFF"', b'"\xed\xa0\x80"', '"x"'.encode("utf-16")],
)
def test_bodies_that_may_hold_a_surrogate_are_told(body):
    assert may_hold_surrogates(body)
    assert not may_hold_surrogates(b'{"a": "\\u00e9 caf\xc3\xa9 \\ud7ff"}')
