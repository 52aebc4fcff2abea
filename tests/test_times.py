"""relay.times: one reading of a time field for every part of relay that reads one (the
replay guard, an event's timeline, opt-out ordering, search), and durations."""

from __future__ import annotations

from datetime import timezone

import pytest

from relay.rules.replies import message_order
from relay.times import epoch, format_age, parse_time


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-10-10T13:53:13.749+01:00", "2022-10-10T12:53:13.749000+00:00"),
        ("2024-01-07T14:36:09.266Z", "2024-01-07T14:36:09.266000+00:00"),
        ("2022-10-10 13:53:13", "2022-10-10T13:53:13+00:00"),  # no offset: UTC
        ("2022-10-10T13:53:13.7+0100", "2022-10-10T12:53:13.700000+00:00"),
        ("2022-10-10T13:53:13.123456789Z", "2022-10-10T13:53:13.123456+00:00"),
        ("1665406393749", "2022-10-10T12:53:13.749000+00:00"),  # Unix milliseconds
        ("1665406393", "2022-10-10T12:53:13+00:00"),  # Unix seconds
        ("", None),
        ("soon", None),
        ("nan", None),
        ("1e999", None),
        (None, None),
        ({"at": 1}, None),
    ],
)
def test_times_are_parsed_as_senders_write_them(value, expected):
    moment = parse_time(value)
    assert (moment.astimezone(timezone.utc).isoformat() if moment else None) == expected


@pytest.mark.parametrize(
    "sent",
    ["1704638169266", 1704638169266, "2024-01-07T14:36:09.266Z", "2024-01-07T15:36:09.266+0100"],
)
def test_opt_out_ordering_reads_a_time_as_the_replay_guard_does(sent):
    """A STOP sent at 14:36:09.266 and received a minute later sorts by when it was sent,
    whichever way the sender wrote it (a Unix time in ms was read as no time, and the
    message ordered by its arrival)."""
    event = {"id": "01B", "timestamp": sent, "received_at": "2024-01-07T14:37:09.000Z"}
    assert epoch(sent) == 1704638169.266
    assert message_order(event) == "001704638169266:01B"


def test_a_message_without_a_readable_time_counts_from_its_arrival():
    event = {"id": "01C", "timestamp": "soon", "received_at": "2024-01-07T14:37:09.000Z"}
    assert message_order(event) == "001704638229000:01C"


@pytest.mark.parametrize(
    ("seconds", "one", "two"),
    [
        (0, "0s", "0s"),
        (42.9, "42s", "42s"),
        (60, "1m", "1m 0s"),
        (200, "3m", "3m 20s"),
        (3599, "59m", "59m 59s"),
        (18120, "5h", "5h 2m"),
        (187200, "2d", "2d 4h"),
    ],
)
def test_an_age_is_shown_in_its_largest_units(seconds, one, two):
    """The command line shows one unit (``relay dlq list``), the console two."""
    assert format_age(seconds) == one
    assert format_age(seconds, parts=2) == two
