"""Once per Redis: the dead letters stored before the per-destination index existed, added
to it (:meth:`relay.state.dead_letters.DeadLetters.backfill` calls this, then sets a
marker key).

They are all in the time index, as old as dead letters. Batch by batch, oldest first, a
Lua call adds each id to its destination's set with the time it was stored, unless it is
gone or indexed already (stored meanwhile): idempotent, and safe beside writers. The
destination is the one the delivery id names (``<event id>:<destination>[~n]``); the
record says it for a fallback's id and a routing's (cjson, in the Lua call), or here for a
record cjson refuses (a lone surrogate from an SMS).
"""

from __future__ import annotations

import math
from typing import Protocol

import redis

from relay.events import ROUTING, is_fallback_id, routing_mark
from relay.state import keys
from relay.state.client import loads, texts

Position = tuple[float, str]  #: (stored time, id), as relay.state.dead_letters pages them


class DeadLetterIndex(Protocol):
    """What the backfill needs of :class:`relay.state.dead_letters.DeadLetters`."""

    redis: redis.Redis
    ttl: int

    def page(
        self, destination: str | None, low: float, high: float, after: Position | None, want: int
    ) -> tuple[list[Position], int]: ...


#: dead letters per Lua call (one decoding every record: about 10 ms of Redis here, busy)
BATCH = 100

#: KEYS: the time index, the id → destination hash; ARGV: the record key prefix, the
#: destination sets' prefix, seconds those sets live after a write, then pairs of id and
#: destination ('': the record's, decoded here). Each still stored and in no destination's
#: set yet is added to its destination's, with the time it was stored. Returns the ids
#: whose record cjson could not decode (the caller reads those itself).
_BACKFILL = """
local undecoded = {}
for i = 4, #ARGV, 2 do
  local id, destination = ARGV[i], ARGV[i + 1]
  local stored = redis.call('ZSCORE', KEYS[1], id)
  if stored and redis.call('HEXISTS', KEYS[2], id) == 0 then
    local raw = destination == '' and redis.call('GET', ARGV[1] .. id)
    if raw then
      local ok, record = pcall(cjson.decode, raw)
      if not ok then table.insert(undecoded, id)
      elseif type(record) == 'table' and type(record.destination) == 'string' then
        destination = record.destination
      end
    end
    if destination ~= '' then
      redis.call('HSET', KEYS[2], id, destination)
      redis.call('ZADD', ARGV[2] .. destination, stored, id)
      redis.call('EXPIRE', ARGV[2] .. destination, ARGV[3])
    end
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
return undecoded
"""


def backfill(dead: DeadLetterIndex) -> None:
    """Index by destination every dead letter of ``dead`` that is not yet."""
    script = dead.redis.register_script(_BACKFILL)

    def index(pairs: list[str]) -> list[str]:
        if not pairs:
            return []
        args: list[str | int] = [keys.dead(""), keys.dead_of(""), dead.ttl, *pairs]
        return texts(script(keys=[keys.DEAD, keys.DEAD_DESTINATIONS], args=args))

    after: Position | None = None
    while True:
        batch, _ = dead.page(None, -math.inf, math.inf, after, BATCH)
        if not batch:
            return
        undecoded = index([item for _, did in batch for item in (did, _named(did))])
        if undecoded:
            raws = dead.redis.mget([keys.dead(did) for did in undecoded])
            found = [(did, _destination(raw)) for did, raw in zip(undecoded, raws, strict=True)]
            index([item for did, name in found if name for item in (did, name)])
        after = batch[-1]


def _destination(raw: str | bytes | None) -> str | None:
    """The destination of a stored record, or None (a routing's, or not a record)."""
    try:
        record = loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None
    name = record.get("destination") if isinstance(record, dict) else None
    return name if isinstance(name, str) and name and keys.storable(name) else None


def _named(delivery_id: str) -> str:
    """The destination a delivery id names, ``<event id>:<destination>[~n]`` (relay's event
    ids hold no colon); '' where only the record can say: a fallback's id
    (``…:fallback[~n]``) names the delivery it stands in for, a routing's (``…:(routing)``)
    none."""
    _, _, target = delivery_id.partition(":")
    if not target or target == ROUTING or is_fallback_id(delivery_id):
        return ""
    name = routing_mark(target)[0]
    return name if keys.storable(name) else ""
