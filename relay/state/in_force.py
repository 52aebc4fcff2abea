"""The rules in force, as the processes that run them record them in Redis.

Every web and worker process records the rules it loads (at start and at each reload):
their version, when, and for each destination what its status shows of it (type, limits,
ordering). A command beside them (``relay destinations pause``, ``resume``) checks a name
against this record rather than reading a rules file of its own, which may be another file
or none. The last process to load rules wrote it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from relay.state import keys
from relay.state.client import dumps, loads


@dataclass(frozen=True)
class InForce:
    """What a process recorded: the rules' ``version``, when (``at``, epoch seconds), and
    per destination name what its status shows of it."""

    version: str
    at: float
    destinations: dict[str, dict[str, Any]]


class RulesInForce:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def record(self, version: str, destinations: Mapping[str, Mapping[str, Any]]) -> None:
        """The rules of ``version``, with these destinations, are in force now."""
        found = {name: dict(fields) for name, fields in destinations.items()}
        record = {"version": version, "at": time.time(), "destinations": found}
        self.redis.set(keys.RULES_IN_FORCE, dumps(record))

    def read(self) -> InForce | None:
        """The last record, or None (no process has recorded rules in this Redis yet, or
        what is there is not a record)."""
        raw = self.redis.get(keys.RULES_IN_FORCE)
        try:
            record = loads(raw) if raw else None
            if not isinstance(record, dict) or not isinstance(record.get("destinations"), dict):
                return None
            return InForce(str(record["version"]), float(record["at"]), record["destinations"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
