"""Durations as operators write them: ``250ms``, ``2s``, ``10m``, ``24h``, ``7d``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: object) -> float:
    """Seconds for ``text``; a bare number is seconds. ValueError when unreadable."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"negative duration: {text!r}")
        return float(text)
    match = _PATTERN.match(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (write e.g. 250ms, 2s, 10m, 24h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
