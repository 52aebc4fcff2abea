"""Once per Redis: the dead letters stored before the per-destination index existed, added
to it (:meth:`relay.state.dead_letters.DeadLetters.backfill` calls this, then sets a
marker key).

They are all in the time index, as old as dead letters. Batch by batch, oldest first, a
Lua call reads each record's destination (cjson) and adds the id to that destination's set
with the time it was stored, unless it is gone or indexed already (stored meanwhile):
idempotent, and safe beside writers. A record cjson refuses (a lone surrogate from an SMS)
is read here instead.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from relay.state import keys
from relay.state.client import loads, texts

if TYPE_CHECKING:
    from relay.state.dead_letters import DeadLetters, Position

#: dead letters decoded per Lua call (about 10 ms of Redis each on this 2-core machine, busy)
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


def backfill(dead: DeadLetters) -> None:
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
        undecoded = index([item for _, did in batch for item in (did, "")])
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
