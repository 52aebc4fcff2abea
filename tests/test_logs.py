"""Log lines: one format, structured fields, phone numbers masked unless RELAY_LOG_PII=1,
no control character from what others sent."""

import json
import logging
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.logs import ConsoleFormatter, JsonFormatter, escape, mask_numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reply to 447700900123 failed", "reply to ********0123 failed"),
        ("to +447700900123.", "to +********0123."),
        ("event 01M8ESPEZ0YCBY1047700 ok", "event 01M8ESPEZ0YCBY1047700 ok"),  # ids stay
        ("code 7102 at 2026-11-27", "code 7102 at 2026-11-27"),  # short numbers stay
    ],
)
def test_phone_numbers_are_masked_to_the_last_four_digits(text, expected):
    assert mask_numbers(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reply to +44 7700 900123 failed", "reply to +** **** **0123 failed"),
        ("from +1 555 555 0199", "from +* *** *** 0199"),
        ("call (555) 555-0199.", "call (***) ***-0199."),
        ("call 555-555-0199, or", "call ***-***-0199, or"),
        ("to 555.555.0199", "to ***.***.0199"),
        ("to +1-555-555-0199", "to +*-***-***-0199"),
        ("to +1 (555) 555-0199", "to +* (***) ***-0199"),
        ("to +44 (0) 7700 900123", "to +** (*) **** **0123"),
        ("to 07700 900123", "to ***** **0123"),
        ("to 020 7946 0958", "to *** **** 0958"),
        ("(447700900123)", "(********0123)"),
        ("to 555-555-019 9", "to ***-***-019 9"),
    ],
)
def test_numbers_written_with_spaces_dashes_dots_or_parentheses_are_masked(text, expected):
    assert mask_numbers(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "redis at 127.0.0.1:6379",
        "peer 192.168.100.200 closed",
        "listening on 0.0.0.0:9100",
        "bind 10.20.30.40:8000",
        "at 2026-11-29 15:43:00",
        "at 2026-11-29T15:43:00.123Z",
        "due 29.11.2026 or 11/29/2026",
        "event 01JD8X9Q2W3E4R5T6Y7U8I9O0P routed",
        "event 01M8ESPEZ0YCBY104JTMN2DF92:route:dest",
        "task 7f3af32c-8d6a-4173-b1c8-4805135ada71",
        "took 12.3456789s, then 0.0012345678 s",
        "ports 8000 8001",
        "redis 7.0.15 (/usr/bin/redis-server)",
    ],
)
def test_addresses_dates_times_ports_and_ids_are_not_masked(text):
    assert mask_numbers(text) == text


def record(message: str, *args, **extra) -> logging.LogRecord:
    entry = logging.LogRecord(
        "relay.deliver", logging.INFO, __file__, 1, message, args or None, None
    )
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def test_json_line_carries_the_structured_fields_and_nothing_else():
    entry = record(
        "delivery to 447700900123 failed",
        event_id="E1",
        route="r",
        destination="d",
        attempt=2,
        outcome="retry",
        data={"args": "secret text"},
    )
    line = json.loads(JsonFormatter().format(entry))
    assert line["message"] == "delivery to ********0123 failed"
    assert {k: line[k] for k in ("event_id", "route", "destination", "attempt", "outcome")} == {
        "event_id": "E1",
        "route": "r",
        "destination": "d",
        "attempt": 2,
        "outcome": "retry",
    }
    assert "data" not in line and line["level"] == "info" and line["logger"] == "relay.deliver"


def test_pii_flag_keeps_numbers_and_console_format_shows_fields():
    entry = record("reply to 447700900123", event_id="E1")
    assert JsonFormatter(pii=True).format(entry).count("447700900123") == 1
    text = ConsoleFormatter().format(entry)
    assert "reply to ********0123" in text and "[event_id=E1]" in text


#: every C0 and C1 control, DEL, the Unicode line and paragraph separators
CONTROLS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)]


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_console_line_escapes_every_control_character(char):
    entry = record("text %s", f"a{char}b", reason=f"c{char}d")
    line = ConsoleFormatter().format(entry)
    assert not any(c in line for c in CONTROLS), repr(line)
    shown = escape(char)
    assert shown.startswith("\\") and f"a{shown}b" in line and f"reason=c{shown}d" in line


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_json_line_escapes_every_control_character_and_keeps_the_text(char):
    entry = record("text %s", f"a{char}b", reason=f"c{char}d")
    line = JsonFormatter().format(entry)
    assert not any(c in line for c in CONTROLS), repr(line)
    decoded = json.loads(line)
    assert decoded["message"] == f"text a{char}b" and decoded["reason"] == f"c{char}d"


def test_the_examples_of_the_audit_are_escaped():
    entry = record("%s", "ok\x1b]0;pwned\x07\x1b[2J\x85forged\u2028line\u2029\u202egnp.exe")
    assert (
        ConsoleFormatter()
        .format(entry)
        .endswith("ok\\x1b]0;pwned\\x07\\x1b[2J\\x85forged\\u2028line\\u2029\\u202egnp.exe")
    )


def test_a_console_traceback_keeps_its_lines_but_not_the_exceptions_line_breaks():
    try:
        try:
            raise KeyError("inner\n12:00:00.000 INFO    relay: forged")
        except KeyError as exc:
            raise ValueError("outer\x1b[2J\nforged too") from exc
    except ValueError:
        entry = logging.LogRecord(
            "relay.deliver", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    lines = ConsoleFormatter().format(entry).splitlines()
    assert lines[0].endswith("relay.deliver: failed") and lines[1].startswith("Traceback")
    assert "KeyError: 'inner\\n12:00:00.000 INFO    relay: forged'" in lines
    assert "ValueError: outer\\x1b[2J\\nforged too" in lines
    assert not any(line.startswith(("12:00", "forged")) for line in lines)
    assert json.loads(JsonFormatter().format(entry))["message"].endswith(
        "ValueError: outer\x1b[2J\nforged too"
    )


@given(st.text())
def test_any_text_is_one_clean_line(text):
    entry = record("%s", text, reason=text)
    console = ConsoleFormatter(pii=True).format(entry)
    assert "\n" not in console and not any(c in console for c in CONTROLS)
    line = JsonFormatter(pii=True).format(entry)
    assert not any(c in line for c in CONTROLS)
    assert json.loads(line)["message"] == text


@pytest.mark.parametrize("unit", ["(1)", "(12345) ", "1-", "1 ", "+(1)", "1.(1) ", "(1) x "])
def test_masking_takes_linear_time_on_hostile_text(unit):
    text = unit * (60_000 // len(unit)) + "x"
    started = time.perf_counter()
    mask_numbers(text)
    assert time.perf_counter() - started < 0.5
