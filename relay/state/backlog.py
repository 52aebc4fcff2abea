"""Each destination's backlog: how many of its deliveries the pending outbox holds.

The counts live in one hash (``relay:backlog``), changed by the same Lua call as the
outbox (:data:`relay.state.pending.LIBRARY`), so reading them costs one HGETALL whatever
the outbox holds. A Redis written before the counts existed has deliveries pending and no
counts: the first read counts them in, once (then a marker key says so). Batch by batch
the outbox is read here and decoded in Python (cjson refuses a task holding a lone
surrogate, from an SMS), and a Lua call records each delivery still pending and not
recorded yet (added meanwhile) with its destination and counts it; then each recorded
delivery no longer pending (settled by a version of relay that did not count) is
uncounted. Idempotent, and safe beside writers, who record and count the same way: with
the marker deleted, the next read counts again.
"""

from __future__ import annotations

import redis

from relay.state import keys
from relay.state.client import loads

#: outbox members read per HSCAN step and per Lua call
BATCH = 1000

#: KEYS: the pending hash, member → destination, the counts; ARGV: member, destination, …
_BACKFILL = """
for i = 1, #ARGV, 2 do
  local member, destination = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', KEYS[1], member) == 1
      and redis.call('HSETNX', KEYS[2], member, destination) == 1 then
    redis.call('HINCRBY', KEYS[3], destination, 1)
  end
end
return 1
"""

#: KEYS: as _BACKFILL; ARGV: recorded members. Those no longer pending are uncounted.
_PRUNE = """
for _, member in ipairs(ARGV) do
  if redis.call('HEXISTS', KEYS[1], member) == 0 then
    local destination = redis.call('HGET', KEYS[2], member)
    if destination then
      redis.call('HDEL', KEYS[2], member)
      if redis.call('HINCRBY', KEYS[3], destination, -1) <= 0 then
        redis.call('HDEL', KEYS[3], destination)
      end
    end
  end
end
return 1
"""


def counts(client: redis.Redis) -> dict[str, int]:
    """Pending deliveries per destination (destinations with none are left out)."""
    pipe = client.pipeline(transaction=False)
    pipe.exists(keys.BACKLOG_COUNTED)
    pipe.hgetall(keys.BACKLOG)
    counted, found = pipe.execute()
    if not counted:
        backfill(client)
        client.set(keys.BACKLOG_COUNTED, "1")
        found = client.hgetall(keys.BACKLOG)
    return {str(name): int(n) for name, n in found.items() if int(n) > 0}


def backfill(client: redis.Redis) -> None:
    """Count in every pending delivery not counted yet; uncount every one counted that is
    no longer pending."""
    ks = [keys.PENDING_TASKS, keys.PENDING_DESTINATIONS, keys.BACKLOG]
    add, prune = client.register_script(_BACKFILL), client.register_script(_PRUNE)
    batch: list[str] = []
    for member, raw in client.hscan_iter(keys.PENDING_TASKS, match="deliver:*", count=BATCH):
        destination = _destination(raw)
        if destination is not None:
            batch += [str(member), destination]
        if len(batch) >= 2 * BATCH:
            add(keys=ks, args=batch)
            batch = []
    if batch:
        add(keys=ks, args=batch)
    batch = []
    for member, _ in client.hscan_iter(keys.PENDING_DESTINATIONS, count=BATCH):
        batch.append(str(member))
        if len(batch) >= BATCH:
            prune(keys=ks, args=batch)
            batch = []
    if batch:
        prune(keys=ks, args=batch)


def _destination(raw: str | bytes) -> str | None:
    """The destination a pending delivery's task names, or None (it does not decode)."""
    try:
        destination = loads(raw)["args"][0]["destination"]
    except (ValueError, RecursionError, KeyError, IndexError, TypeError):
        return None
    return destination if isinstance(destination, str) else None
