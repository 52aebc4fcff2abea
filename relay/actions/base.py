"""What a delivery attempt came to, when to try again, and what every action shares.

Every action (http, log, email, slack, sms) returns an :class:`Outcome` instead of
raising; the task layer alone turns an outcome into a retry or a dead letter (see
README: Delivery guarantees) with :func:`should_retry` and :func:`next_delay`, under the
destination's :class:`~relay.rules.RetryPolicy`.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timezone
from typing import Any, Literal, Protocol

from relay.rules import RetryPolicy, Structured, Template, render

Kind = Literal["ok", "transient", "permanent"]

KINDS: frozenset[str] = frozenset({"ok", "transient", "permanent"})

#: seconds; the longest Retry-After relay honours (a destination asking for more gets this)
DEFAULT_MAX_RETRY_AFTER = 24 * 60 * 60.0

#: HTTP statuses outside 5xx that are worth another try (timeout, too early, rate limited)
TRANSIENT_STATUSES: frozenset[int] = frozenset({408, 425, 429})

#: characters of a server's answer or an exception quoted in an outcome's error, at most
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Outcome:
    """The result of one delivery attempt.

    ``kind`` is "ok", "transient" (retry later) or "permanent" (dead-letter now);
    ``status`` is the destination's answer code when there was one; ``error`` says what
    went wrong in one short line; ``retry_after`` (seconds) is the destination's own
    request to wait; ``latency`` (seconds) is how long the attempt took.
    """

    kind: Kind
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    latency: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown outcome kind {self.kind!r}")

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form, for history and dead-letter attempt records."""
        return asdict(self)


def classify_http(status: int, headers: Mapping[str, str] | None = None) -> Kind:
    """Kind of an HTTP answer: 2xx ok; 408, 425, 429 and 5xx transient; the rest permanent.

    3xx is permanent because relay never follows a redirect for a POST (the destination's
    URL needs fixing). ``headers`` is accepted so a caller can pass a whole response; the
    kind depends on the status alone.
    """
    if 200 <= status < 300:
        return "ok"
    if status in TRANSIENT_STATUSES or 500 <= status < 600:
        return "transient"
    return "permanent"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    A date is measured from ``now`` (a Unix time; default the current time). A negative
    or past value gives 0.0; a missing or unreadable value gives None. Capping very long
    waits is the caller's job (see :func:`next_delay`).
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    seconds = _parse_delta_seconds(value)
    if seconds is None:
        seconds = _parse_http_date(value, time.time() if now is None else now)
    return None if seconds is None else max(seconds, 0.0)


def _parse_delta_seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def _parse_http_date(value: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" zones parse naive; HTTP dates are always GMT
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp() - now


class Uniform(Protocol):
    """What :func:`backoff` draws from: the :mod:`random` module or a :class:`random.Random`."""

    def uniform(self, a: float, b: float, /) -> float: ...


def backoff(attempt: int, initial: float, maximum: float, rng: Uniform = random) -> float:
    """Exponential backoff with full jitter, in seconds.

    ``attempt`` is the 1-based number of the attempt that just failed; the result is
    uniform in ``[0, min(maximum, initial * 2 ** (attempt - 1))]``. ``rng`` is anything
    with ``uniform`` (the :mod:`random` module or a seeded :class:`random.Random`).
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    # 2**1024 overflows a float; any exponent past 64 is past every sane cap anyway
    ceiling = min(maximum, initial * 2.0 ** min(attempt - 1, 64))
    return rng.uniform(0.0, ceiling)


def should_retry(outcome: Outcome, attempt: int, policy: RetryPolicy) -> bool:
    """True when ``outcome`` of the 1-based ``attempt`` is transient and attempts remain."""
    return outcome.kind == "transient" and attempt < policy.attempts


def next_delay(outcome: Outcome, attempt: int, policy: RetryPolicy, rng: Any = random) -> float:
    """Seconds to wait before the attempt after ``attempt`` (1-based, the one that failed).

    A destination's Retry-After is honoured as the delay itself, even past ``policy.max``
    (it knows its own limits, and retrying sooner only earns another 429), capped at
    :data:`DEFAULT_MAX_RETRY_AFTER` so a hostile value cannot park a delivery forever.
    Without one, the delay is :func:`backoff` under the policy.
    """
    if outcome.retry_after is not None:
        return min(max(outcome.retry_after, 0.0), DEFAULT_MAX_RETRY_AFTER)
    return backoff(attempt, policy.initial, policy.max, rng)


def json_object(body: bytes) -> dict[str, Any]:
    """A receiver's answer as a JSON object, or ``{}`` when it is not one."""
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_text(template: Template, job: Mapping[str, Any]) -> str:
    """``template`` rendered for ``job`` (its event, route, destination and, for a delivery
    to a fallback, its failure): valid Unicode, fit for any encoder on the way out (SMTP,
    JSON for Slack and Webex Connect). TemplateError on failure.
    """
    return render(template, job["event"], job["route"], job["destination"], job.get("failure"))


def render_payload(payload: Structured, job: Mapping[str, Any]) -> Any:
    """``payload`` rendered for ``job`` into JSON-native data, each string valid Unicode.
    TemplateError on failure, naming the part of the payload that failed.
    """
    return payload.render(job["event"], job["route"], job["destination"], job.get("failure"))
