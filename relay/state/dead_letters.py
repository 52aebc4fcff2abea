"""Dead letters: deliveries (and routings) that gave up, kept until replayed, purged, or
past their retention: each expires ``ttl`` seconds after it was stored
(``RELAY_DEAD_LETTER_TTL``), and at most ``limit`` are kept (``RELAY_DEAD_LETTER_MAX``):
beyond it the oldest go first, counted in ``relay_dead_letters_dropped_total``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import redis

from relay import metrics
from relay.events import DeadLetter
from relay.state import keys
from relay.state.client import dumps, loads, texts

#: KEYS: the index; ARGV: oldest score kept, how many kept at most, record key prefix.
#: Returns how many were dropped for the cap (the expired ones are gone already).
_TRIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if over <= 0 then return 0 end
local oldest = redis.call('ZRANGE', KEYS[1], 0, over - 1)
for _, id in ipairs(oldest) do redis.call('DEL', ARGV[3] .. id) end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
return #oldest
"""


class DeadLetters:
    def __init__(
        self, client: redis.Redis, ttl: float = 30 * 86400.0, limit: int = 100_000
    ) -> None:
        self.redis = client
        self.ttl = max(int(ttl), 1)
        self.limit = limit
        self._trim = client.register_script(_TRIM)

    def count(self) -> int:
        return int(self.redis.zcard(keys.DEAD))

    def add(self, record: DeadLetter) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self.stage(pipe, record)
        pipe.execute()
        self.trim()

    def stage(self, pipe: Any, record: DeadLetter) -> None:
        """Add storing ``record`` to ``pipe`` (then call :meth:`trim`)."""
        pipe.set(keys.dead(record["id"]), dumps(record), ex=self.ttl)
        pipe.zadd(keys.DEAD, {record["id"]: time.time()})

    def trim(self) -> int:
        """Forget the expired ones and the oldest beyond the limit; how many were dropped
        for the limit."""
        dropped = int(
            self._trim(keys=[keys.DEAD], args=[time.time() - self.ttl, self.limit, keys.dead("")])
        )
        if dropped:
            metrics.m().dead_letters_dropped.inc(dropped)
        return dropped

    def get(self, delivery_id: str) -> DeadLetter | None:
        raw = self.redis.get(keys.dead(delivery_id))
        return loads(raw) if raw else None

    def ids(self) -> list[str]:
        return texts(self.redis.zrange(keys.DEAD, 0, -1))

    def remove(self, delivery_id: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.dead(delivery_id))
        pipe.zrem(keys.DEAD, delivery_id)
        return bool(pipe.execute()[0])

    # -- operator tools (relay.ops) -------------------------------------------------------

    def scored(self) -> list[tuple[str, float]]:
        """Every dead-letter id with the time it was stored (epoch seconds), oldest first."""
        pairs = cast(list[tuple[str, float]], self.redis.zrange(keys.DEAD, 0, -1, withscores=True))
        return [(str(did), float(score)) for did, score in pairs]

    def get_many(self, delivery_ids: Sequence[str]) -> list[DeadLetter | None]:
        """The records of ``delivery_ids``, in order; None where one is gone."""
        records: list[DeadLetter | None] = []
        for start in range(0, len(delivery_ids), _BATCH):
            batch = delivery_ids[start : start + _BATCH]
            raws = self.redis.mget([keys.dead(did) for did in batch])
            records.extend(loads(raw) if raw else None for raw in raws)
        return records

    def stored_at(self, delivery_id: str) -> float | None:
        """When the dead letter was stored (epoch seconds), or None."""
        score = self.redis.zscore(keys.DEAD, delivery_id)
        return None if score is None else float(score)

    def remove_if_unchanged(self, record: DeadLetter) -> bool:
        """Remove the dead letter only while it is still exactly ``record``.

        A replayed delivery can fail again and be dead-lettered anew before the replay
        removes the old record; the new one must survive.
        """
        key = keys.dead(record["id"])
        return bool(
            self.redis.eval(_REMOVE_IF_UNCHANGED, 2, key, keys.DEAD, dumps(record), record["id"])
        )

    def purge(self, before: float | None = None) -> int:
        """Remove dead letters stored before ``before`` (epoch seconds; None: all); the count.

        Works in batches, each atomic, so that a huge purge never blocks Redis for long.
        """
        bound = "+inf" if before is None else f"({before!r}"
        removed = 0
        while True:
            count = int(self.redis.eval(_PURGE, 1, keys.DEAD, bound, _BATCH, keys.dead("")))
            removed += count
            if count < _BATCH:
                return removed


#: dead letters handled per Redis round trip by the bulk operations
_BATCH = 500

_REMOVE_IF_UNCHANGED = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('zrem', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

# The record keys are derived inside the script (one Redis, not a cluster).
_PURGE = """
local ids = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('del', ARGV[3] .. id)
  redis.call('zrem', KEYS[1], id)
end
return #ids
"""
