"""Durations as written in rules and settings: ``250ms``, ``2s``, ``10m``, ``24h``, ``7d``.

A bare number (``30`` or ``"1.5"``) is seconds. Compound forms (``1h30m``) are not accepted:
one number, one unit, so a value reads the same to everyone.
"""

from __future__ import annotations

import re

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
