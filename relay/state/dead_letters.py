"""Dead letters: deliveries (and routings) that gave up, kept until replayed, purged, or
past their retention: each expires ``ttl`` seconds after it was stored
(``RELAY_DEAD_LETTER_TTL``), and at most ``limit`` are kept (``RELAY_DEAD_LETTER_MAX``):
beyond it the oldest go first, counted in ``relay_dead_letters_dropped_total``.

Pages are read from indexes, never by reading every record: all dead letters by the time
they were stored, and the same per destination, changed in the same transaction or Lua
call as whatever stores or removes one (a store, delete, replay, purge, the cap); a hash
id → destination says which set to leave. One expired by its TTL is older than the
retention: reads skip it (:meth:`DeadLetters.window`), the next store removes it. One
gone otherwise (a retention made longer since) is skipped where a page finds it and
taken out (:meth:`DeadLetters.forget`). Those stored before the per-destination sets
existed are in the time index (as old as dead letters): :meth:`DeadLetters.backfill`
adds them once per Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import redis

from relay import metrics
from relay.events import DeadLetter
from relay.state import keys
from relay.state.client import dumps, loads, texts
from relay.state.dead_letter_backfill import backfill

#: where a page ends: (stored time in epoch seconds, delivery id) of its last dead letter
Position = tuple[float, str]

#: dead letters handled per Redis round trip by the bulk operations
_BATCH = 500

# Every script: KEYS[1] the time index, KEYS[2] the id → destination hash; ARGV[1] the
# record key prefix, ARGV[2] the destination sets' prefix. The keys are derived inside
# the scripts (one Redis, not a cluster).
_UNINDEX = """
local function unindex(id)
  local destination = redis.call('HGET', KEYS[2], id)
  if destination then
    redis.call('ZREM', ARGV[2] .. destination, id)
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREM', KEYS[1], id)
end
local function drop(id)
  redis.call('DEL', ARGV[1] .. id)
  unindex(id)
end
"""

#: ARGV[3]: the oldest stored time kept, ARGV[4]: how many are kept at most, ARGV[5]: how
#: many to handle at most. Returns {dropped for the cap, 1 if there is more to do}.
_TRIM = (
    _UNINDEX
    + """
local budget = tonumber(ARGV[5])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3], 'LIMIT', 0, budget)
for _, id in ipairs(expired) do drop(id) end
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if over <= 0 then return {0, #expired == budget and 1 or 0} end
local oldest = redis.call('ZRANGE', KEYS[1], 0, math.min(over, budget) - 1)
for _, id in ipairs(oldest) do drop(id) end
return {#oldest, (#expired == budget or over > budget) and 1 or 0}
"""
)

#: ARGV[3]: the id. Returns 1 if the dead letter was there.
_REMOVE = (
    _UNINDEX
    + """
local found = redis.call('DEL', ARGV[1] .. ARGV[3])
unindex(ARGV[3])
return found
"""
)

#: ARGV[3]: the id, ARGV[4]: the record as it must still be.
_REMOVE_IF_UNCHANGED = (
    _UNINDEX
    + """
if redis.call('GET', ARGV[1] .. ARGV[3]) ~= ARGV[4] then return 0 end
drop(ARGV[3])
return 1
"""
)

#: ARGV[3]: the score bound (inclusive, or "(x" exclusive), ARGV[4]: at most this many.
_PURGE = (
    _UNINDEX
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do drop(id) end
return #ids
"""
)

#: ARGV[3..]: ids whose record was found missing. Returns how many were still missing.
_FORGET = (
    _UNINDEX
    + """
local gone = 0
for i = 3, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
    unindex(ARGV[i])
    gone = gone + 1
  end
end
return gone
"""
)


class DeadLetters:
    def __init__(
        self, client: redis.Redis, ttl: float = 30 * 86400.0, limit: int = 100_000
    ) -> None:
        self.redis = client
        self.ttl = max(int(ttl), 1)
        self.limit = limit
        self._trim = client.register_script(_TRIM)
        self._remove = client.register_script(_REMOVE)
        self._remove_if_unchanged = client.register_script(_REMOVE_IF_UNCHANGED)
        self._purge = client.register_script(_PURGE)
        self._forget = client.register_script(_FORGET)

    def count(self) -> int:
        return int(self.redis.zcard(keys.DEAD))

    def add(self, record: DeadLetter) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self.stage(pipe, record)
        pipe.execute()
        self.trim()

    def stage(self, pipe: Any, record: DeadLetter) -> None:
        """Add storing ``record`` and indexing it to ``pipe`` (then call :meth:`trim`)."""
        did, destination, now = record["id"], record.get("destination"), time.time()
        pipe.set(keys.dead(did), dumps(record), ex=self.ttl)
        pipe.zadd(keys.DEAD, {did: now})
        if destination is None or not keys.storable(destination):
            return  # a routing's: in no destination's set
        # every entry of these two is at most as old as this one: they can expire with it
        pipe.hset(keys.DEAD_DESTINATIONS, did, destination)
        pipe.expire(keys.DEAD_DESTINATIONS, self.ttl)
        pipe.zadd(keys.dead_of(destination), {did: now})
        pipe.zremrangebyscore(keys.dead_of(destination), "-inf", f"({self.window(now)!r}")
        pipe.expire(keys.dead_of(destination), self.ttl)

    def trim(self) -> int:
        """Forget the expired ones and the oldest beyond the limit; how many were dropped
        for the limit."""
        dropped = 0
        more = True
        while more:
            args: list[Any] = [*_script_prefixes(), self.window(time.time()), self.limit, _BATCH]
            count, again = self._trim(keys=_script_keys(), args=args)
            dropped, more = dropped + int(count), bool(int(again))
        if dropped:
            metrics.m().dead_letters_dropped.inc(dropped)
        return dropped

    def window(self, now: float) -> float:
        """The oldest stored time (epoch seconds) of a dead letter still kept at ``now``."""
        return now - self.ttl

    def get(self, delivery_id: str) -> DeadLetter | None:
        raw = self.redis.get(keys.dead(delivery_id))
        return loads(raw) if raw else None

    def ids(self) -> list[str]:
        return texts(self.redis.zrange(keys.DEAD, 0, -1))

    def remove(self, delivery_id: str, client: Any = None) -> Any:
        """Remove one dead letter: True if it was there (with a pipeline ``client``, added
        to it: its result is 1 or 0)."""
        found = self._remove(
            keys=_script_keys(), args=[*_script_prefixes(), delivery_id], client=client
        )
        return found if client is not None else bool(found)

    # -- operator tools (relay.ops) -------------------------------------------------------

    def page(
        self,
        destination: str | None,
        low: float,
        high: float,
        after: Position | None,
        want: int,
    ) -> tuple[list[Position], int]:
        """Up to ``want`` dead letters (of ``destination``, if given) stored from ``low``
        to ``high`` (epoch seconds, both inclusive), oldest first, after the position
        ``after``: ``(stored time, id)`` pairs; and how many were stored in that span."""
        if destination is not None:
            self.backfill()
        key = keys.DEAD if destination is None else keys.dead_of(destination)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zcount(key, _score(low), _score(high))
        start, ties = _score(low), False
        if after is not None and after[0] > high:
            return [], int(pipe.execute()[0])
        if after is not None and after[0] >= low:
            pipe.zrangebyscore(key, _score(after[0]), _score(after[0]))  # the cursor's ties
            start, ties = f"({after[0]!r}", True
        pipe.zrangebyscore(key, start, _score(high), start=0, num=want, withscores=True)
        total, *replies = pipe.execute()
        found: list[Position] = []
        if ties and after is not None:  # the same time: by id, as Redis orders them
            found = [(after[0], did) for did in texts(replies.pop(0)) if did > after[1]]
        found += [(float(score), str(did)) for did, score in replies[0]]
        return found[:want], int(total)

    def newest(self, destinations: Sequence[str], low: float) -> list[tuple[int, Position | None]]:
        """For each destination: how many of its dead letters were stored since ``low``,
        and the newest one's position."""
        self.backfill()
        pipe = self.redis.pipeline(transaction=False)
        for name in destinations:
            pipe.zcount(keys.dead_of(name), _score(low), "+inf")
            pipe.zrevrangebyscore(keys.dead_of(name), "+inf", _score(low), 0, 1, withscores=True)
        replies = pipe.execute()
        found: list[tuple[int, Position | None]] = []
        for count, top in zip(replies[::2], replies[1::2], strict=True):
            found.append((int(count), (float(top[0][1]), str(top[0][0])) if top else None))
        return found

    def forget(self, delivery_ids: Sequence[str]) -> int:
        """Take the ids whose record is gone out of the indexes; how many were gone."""
        if not delivery_ids:
            return 0
        return int(self._forget(keys=_script_keys(), args=[*_script_prefixes(), *delivery_ids]))

    def backfill(self) -> None:
        """Add the dead letters stored before the per-destination index existed to their
        destination's set; once per Redis (then a marker key says so), idempotent."""
        if self.redis.exists(keys.DEAD_INDEXED):
            return
        backfill(self)
        self.redis.set(keys.DEAD_INDEXED, "1")

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
        args = [*_script_prefixes(), record["id"], dumps(record)]
        return bool(self._remove_if_unchanged(keys=_script_keys(), args=args))

    def purge(self, before: float | None = None) -> int:
        """Remove dead letters stored before ``before`` (epoch seconds; None: all); the count.

        Works in batches, each atomic, so that a huge purge never blocks Redis for long.
        """
        bound = "+inf" if before is None else f"({before!r}"
        removed = 0
        while True:
            count = int(self._purge(keys=_script_keys(), args=[*_script_prefixes(), bound, _BATCH]))
            removed += count
            if count < _BATCH:
                return removed


def _script_keys() -> list[str]:
    """The KEYS of every dead-letter script: the time index, the id → destination hash."""
    return [keys.DEAD, keys.DEAD_DESTINATIONS]


def _script_prefixes() -> list[str]:
    """ARGV[1] and ARGV[2] of every dead-letter script: where the records and the
    destination sets are."""
    return [keys.dead(""), keys.dead_of("")]


def _score(value: float) -> str:
    """A Redis score bound for ``value`` (inclusive)."""
    return "+inf" if value == math.inf else "-inf" if value == -math.inf else repr(value)
