"""How often and how patiently a destination's transient failures are retried.

A rules file sets it per destination or per route (``retry: {attempts, initial, max}``,
see config/README.md: Destinations); the delivery layer applies it
(:func:`relay.actions.should_retry`, :func:`relay.actions.next_delay`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from relay.events import RetrySpec


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` counts every try including the first; ``initial`` and ``max`` are seconds.

    The defaults are the README's (Delivery guarantees): 20 attempts, backoff from 2 s up
    to 30 min.
    """

    attempts: int = 20
    initial: float = 2.0
    max: float = 1800.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(f"retry.attempts must be an integer, got {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"retry.attempts must be at least 1, got {self.attempts}")
        if not self.initial > 0:
            raise ValueError(f"retry.initial must be positive, got {self.initial!r}")
        if not self.max >= self.initial:
            raise ValueError(f"retry.max ({self.max!r}) is less than initial ({self.initial!r})")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> RetryPolicy:
        """Build from ``{attempts, initial, max}`` (seconds as numbers); missing keys default.

        Unknown keys are a ValueError. Duration strings ("2s", "30m") are the rules
        loader's to parse before this point.
        """
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown retry setting(s): {', '.join(unknown)}")
        for key in ("initial", "max"):
            if key in data:
                data[key] = _seconds(key, data[key])
        return cls(**data)

    def spec(self) -> RetrySpec:
        """The policy as a job carries it (its inverse: :meth:`from_mapping`)."""
        return {"attempts": self.attempts, "initial": self.initial, "max": self.max}


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"retry.{key} must be a number of seconds, got {value!r}")
    return float(value)


#: the policy of a destination and route that set none
DEFAULT_RETRY = RetryPolicy()
