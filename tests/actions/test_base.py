"""Outcome classification, Retry-After parsing, backoff and the retry policy: pure tables."""

from __future__ import annotations

import email.utils
import random

import pytest

from relay.actions import (
    DEFAULT_MAX_RETRY_AFTER,
    Outcome,
    backoff,
    classify_http,
    next_delay,
    parse_retry_after,
    should_retry,
)
from relay.rules import RetryPolicy

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "ok"),
        (201, "ok"),
        (204, "ok"),
        (301, "permanent"),
        (400, "permanent"),
        (401, "permanent"),
        (404, "permanent"),
        (408, "transient"),
        (410, "permanent"),
        (422, "permanent"),
        (425, "transient"),
        (429, "transient"),
        (500, "transient"),
        (502, "transient"),
        (503, "transient"),
        (504, "transient"),
        (505, "transient"),
    ],
)
def test_classify_http_maps_status_to_kind(status: int, kind: str) -> None:
    assert classify_http(status, {}) == kind


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("-5", 0.0),
        ("abc", None),
        ("", None),
        ("nan", None),
        (None, None),
        (_http_date(NOW + 90), 90.0),
        (_http_date(NOW - 90), 0.0),
        ("Tue, 14 Nov 2023 22:13:50 -0000", 30.0),  # a naive date is read as GMT
    ],
)
def test_parse_retry_after_reads_seconds_and_dates(value: str | None, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_measures_dates_from_the_current_time_by_default() -> None:
    seconds = parse_retry_after(_http_date(4_000_000_000))
    assert seconds is not None and seconds > 1_000_000


@pytest.mark.parametrize("attempt", range(1, 40))
def test_backoff_stays_within_the_exponential_ceiling_and_the_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(1800.0, 2.0 * 2 ** (attempt - 1))
    delays = [backoff(attempt, 2.0, 1800.0, rng) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range
    assert min(delays) < ceiling * 0.2


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff(n, 2.0, 1800.0, random.Random(7)) for n in range(1, 21)]
    again = [backoff(n, 2.0, 1800.0, random.Random(7)) for n in range(1, 21)]
    assert first == again


def test_backoff_survives_absurd_attempt_numbers() -> None:
    assert 0.0 <= backoff(10_000, 2.0, 1800.0, random.Random(1)) <= 1800.0


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff(0, 2.0, 1800.0)


def test_next_delay_honours_retry_after_beyond_the_policy_max() -> None:
    policy = RetryPolicy(initial=1.0, max=10.0)
    assert next_delay(Outcome("transient", 429, retry_after=60.0), 1, policy) == 60.0


def test_next_delay_caps_retry_after_at_a_day() -> None:
    outcome = Outcome("transient", 503, retry_after=10 * DEFAULT_MAX_RETRY_AFTER)
    assert next_delay(outcome, 1, RetryPolicy()) == DEFAULT_MAX_RETRY_AFTER


def test_next_delay_without_retry_after_is_jittered_backoff() -> None:
    policy = RetryPolicy(initial=2.0, max=30.0)
    delays = [next_delay(Outcome("transient"), 3, policy, random.Random(n)) for n in range(50)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("kind", "attempt", "expected"),
    [
        ("transient", 1, True),
        ("transient", 19, True),
        ("transient", 20, False),
        ("permanent", 1, False),
        ("ok", 1, False),
    ],
)
def test_should_retry_only_transient_outcomes_while_attempts_remain(
    kind: str, attempt: int, expected: bool
) -> None:
    assert should_retry(Outcome(kind), attempt, RetryPolicy()) is expected  # type: ignore[arg-type]


def test_retry_policy_defaults_match_the_design() -> None:
    assert RetryPolicy() == RetryPolicy(attempts=20, initial=2.0, max=1800.0)


def test_retry_policy_from_mapping_fills_defaults() -> None:
    assert RetryPolicy.from_mapping({"attempts": 3, "max": 60}) == RetryPolicy(3, 2.0, 60.0)
    assert RetryPolicy.from_mapping(None) == RetryPolicy()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"attempts": 0}, "at least 1"),
        ({"attempts": 2.5}, "must be an integer"),
        ({"initial": "2s"}, "number of seconds"),
        ({"initial": 0}, "must be positive"),
        ({"initial": 10, "max": 5}, "less than initial"),
        ({"tries": 3}, "unknown retry setting"),
    ],
)
def test_retry_policy_from_mapping_rejects_bad_settings(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy.from_mapping(data)


def test_outcome_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown outcome kind"):
        Outcome("maybe")  # type: ignore[arg-type]


def test_outcome_to_dict_is_json_native() -> None:
    assert Outcome("ok", 200, latency=0.5).to_dict() == {
        "kind": "ok",
        "status": 200,
        "error": None,
        "retry_after": None,
        "latency": 0.5,
    }
