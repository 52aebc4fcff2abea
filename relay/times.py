"""Time, read one way everywhere: moments and durations.

- **Moments** (:func:`parse_time`, :func:`epoch`): what a sender puts in a time field
  (``timeStamp``, ``datetime``, ``ts``) and relay's own stamps (``received_at``,
  ``dead_at``). ISO 8601 as Webex Connect sends it (``2022-10-10T13:53:13.749+01:00``,
  ``…Z``), with any number of fraction digits, ``+0100`` or no offset (taken as UTC), a
  space instead of ``T``; or a Unix time in seconds or milliseconds (``1704638169266``).
  The replay guard, an event's timeline, opt-out ordering and search's ``since``/``until``
  all read them here, so one value is the same moment to each.
- **Durations** (:func:`parse_duration`) as written in rules and settings: ``250ms``,
  ``2s``, ``10m``, ``24h``, ``7d``. A bare number (``30`` or ``"1.5"``) is seconds.
  Compound forms (``1h30m``) are not accepted: one number, one unit, so a value reads the
  same to everyone.
- **Ages** (:func:`format_age`): how long ago, as the command line and the console show it.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*")
_EXAMPLES = "250ms, 2s, 10m, 24h, 7d, or a number of seconds"


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``; a ValueError naming the value when it is not a duration.

    Numbers are seconds; negative values and booleans are rejected.
    """
    if isinstance(text, bool):
        raise ValueError(f"bad duration {text!r} (use {_EXAMPLES})")
    if isinstance(text, (int, float)):
        if text < 0 or text != text:
            raise ValueError(f"bad duration {text!r} (must not be negative)")
        return float(text)
    found = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"bad duration {text!r} (use {_EXAMPLES})")
    number, unit = found.groups()
    return float(number) * _UNITS[unit or "s"]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` in the largest unit, e.g. 1800 → ``30m``."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        count = seconds / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


_AGE_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_age(seconds: float, parts: int = 1) -> str:
    """How long ago, in whole units: the largest (``42s``, ``5m``, ``3h``, ``2d``), or with
    ``parts=2`` the next one too (``3m 20s``, ``5h 2m``, ``2d 4h``; under a minute ``42s``)."""
    whole = int(seconds)
    for at, (unit, size) in enumerate(_AGE_UNITS):
        if whole >= size or unit == "s":
            text = f"{whole // size}{unit}"
            if parts > 1 and unit != "s":
                smaller, small_size = _AGE_UNITS[at + 1]
                text += f" {whole % size // small_size}{smaller}"
            return text
    raise AssertionError("unreachable: the last unit takes every age")


# -- moments ------------------------------------------------------------------------------

#: earlier than any moment (sorts a missing time first)
NEVER = datetime.min.replace(tzinfo=timezone.utc)
_FRACTION = re.compile(r"\.(\d+)")
_OFFSET = re.compile(r"([+-]\d\d)(\d\d)$")
#: a Unix time above this is in milliseconds (1e11 s is the year 5138; 1e11 ms is 1973)
_MILLISECONDS_FROM = 1e11


def parse_time(value: object) -> datetime | None:
    """An aware datetime from a time field (see the module's doc), or None."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return _parse_iso(text)
    if not math.isfinite(number):
        return None
    seconds = number / 1000 if number > _MILLISECONDS_FROM else number
    try:
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def epoch(value: object) -> float | None:
    """Unix seconds of a time field (see :func:`parse_time`), or None."""
    moment = parse_time(value)
    return moment.timestamp() if moment is not None else None


def _parse_iso(text: str) -> datetime | None:
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    text = _OFFSET.sub(r"\1:\2", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
