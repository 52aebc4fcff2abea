"""Log lines: one format, structured fields, phone numbers masked unless RELAY_LOG_PII=1."""

import json
import logging

import pytest

from relay.logs import ConsoleFormatter, JsonFormatter, mask_numbers


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


def record(message: str, **extra) -> logging.LogRecord:
    entry = logging.LogRecord("relay.deliver", logging.INFO, __file__, 1, message, None, None)
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
