"""Ordered delivery per key: a destination's deliveries that share a value of its
``ordered_by`` field go one at a time, in the order relay accepted their events.

Events are routed in parallel, so the order comes from the accept, not from routing:

- **at accept** (``Store.accept``, the same Lua call) an event with a value for a field
  some destination is ordered by takes the next number of ``relay:seq`` and is added to
  ``relay:arrivals:<field>:<h>`` (h: the value's short hash) with it, in batch order;
- **at routing** (``Store.route``, its one Lua call) each ordered delivery joins its key's
  queue, ``relay:ordq:<dest>:<h>``, with its event's number, and the event leaves its
  arrival sets;
- a delivery may start only when it is **its key's turn**: it is the first of the queue,
  and no event of the key accepted before it is still to be routed (an arrival whose
  routing is no longer pending was routed or given up: it is dropped where it is met).
  Checked where an attempt starts (the routing call for first attempts, :data:`BEGIN`
  for task messages); one that may not start is **parked** (``relay:ordw:<dest>:<h>``):
  not locked, not counted, no task message, its pending due time infinite and owned by no
  node, so neither the sweeper nor a take-over publishes it;
- when the first **settles** (delivered, skipped, dead-lettered) it leaves the queue in
  the same transaction (:meth:`Ordering.settle`), and the next, if parked and now in
  turn, is **woken**: out of the parked set, due again, owned by the settling node (so a
  crash before its task is published is a take-over's), and returned to be published. A
  parked first waiting for an earlier event's routing is recorded in
  ``relay:ordafter:<event>``; that routing (or its dead letter) wakes it the same way.
  Nothing is ever polled;
- a dead-lettered first with ``on_failure: block`` stays first, and its key is marked in
  ``relay:ordb:<dest>``: nothing of the key goes until a replay of that dead letter (it
  goes again as the first) or its deletion (:meth:`Ordering.unblock`).

A first whose work is gone (not pending, and not blocking with its dead letter kept) is
dropped where it is met, so no stale entry holds a key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from relay.events import Job, Order
from relay.state import keys
from relay.state.client import dumps, loads, texts
from relay.state.pending import Pending

#: Lua functions every ordering script shares. ``p``: the key prefix; ``ref``: a key of a
#: destination, {destination, field, h}; ``out``: a list the woken deliveries are added to
#: (member, task, …).
LIBRARY = """
local function o_keys(p, ref)
  return p .. 'ordq:' .. ref[1] .. ':' .. ref[3], p .. 'ordw:' .. ref[1] .. ':' .. ref[3],
    p .. 'arrivals:' .. ref[2] .. ':' .. ref[3], p .. 'ordb:' .. ref[1]
end
local function o_pending(p, member)
  return redis.call('HEXISTS', p .. 'pending:tasks', member) == 1
end
local function o_blocker(p, ref)
  local _, _, _, b = o_keys(p, ref)
  local raw = redis.call('HGET', b, ref[3])
  if raw then return cjson.decode(raw)['id'] end
  return nil
end
-- the key's first delivery (id, its number, 'pending' or 'blocked'), or nil; a first
-- whose work is gone is dropped on the way, and so is a block that names no first
local function o_head(p, ref)
  local q, w, _, b = o_keys(p, ref)
  local blocker = o_blocker(p, ref)
  while true do
    local top = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
    local id = top[1]
    if not id then break end
    if o_pending(p, 'deliver:' .. id) then
      if blocker and blocker ~= id then redis.call('HDEL', b, ref[3]) end
      return id, top[2], 'pending'
    end
    if id == blocker and redis.call('EXISTS', p .. 'dead:' .. id) == 1 then
      return id, top[2], 'blocked'
    end
    redis.call('ZREM', q, id)
    redis.call('SREM', w, id)
  end
  if blocker then redis.call('HDEL', b, ref[3]) end
  return nil
end
-- the first event of the key accepted before number seq and still to be routed, or nil
local function o_earlier(p, ref, seq)
  local _, _, a = o_keys(p, ref)
  while true do
    local first = redis.call('ZRANGEBYSCORE', a, '-inf', '(' .. seq, 'LIMIT', 0, 1)
    local id = first[1]
    if not id then return nil end
    if o_pending(p, 'route:' .. id) then return id end
    redis.call('ZREM', a, id)
  end
end
-- whose turn it is (nil: nobody's), and what it waits for: '' nothing, 'blocked' (its own
-- dead letter holds the key) or the id of an earlier event still to be routed, whose
-- routing checks the key again
local function o_turn(p, ref)
  local id, seq, state = o_head(p, ref)
  if not id then return nil, '' end
  if state == 'blocked' then return id, 'blocked' end
  local earlier = o_earlier(p, ref, seq)
  if earlier then
    redis.call('SADD', p .. 'ordafter:' .. earlier, cjson.encode(ref))
    return id, earlier
  end
  return id, ''
end
-- the delivery id waits, holding nothing: no task message, never overdue, nobody's
local function o_park(p, ref, id, owned)
  local _, w = o_keys(p, ref)
  local member = 'deliver:' .. id
  redis.call('SADD', w, id)
  redis.call('ZADD', p .. 'pending', 'XX', '+inf', member)
  redis.call('DEL', p .. 'republished:' .. member)
  if owned ~= '' then redis.call('SREM', owned, member) end
end
-- if it is the turn of a parked delivery, it is this node's to publish (added to out)
local function o_wake(p, ref, owned, due, out)
  local id, waits = o_turn(p, ref)
  if not id or waits ~= '' then return end
  local _, w = o_keys(p, ref)
  if redis.call('SREM', w, id) == 0 then return end
  local member = 'deliver:' .. id
  redis.call('ZADD', p .. 'pending', 'XX', due, member)
  if owned ~= '' then redis.call('SADD', owned, member) end
  out[#out + 1] = member
  out[#out + 1] = redis.call('HGET', p .. 'pending:tasks', member)
end
-- the delivery id of the event joins its key's queue with the event's number; never
-- ahead of a first that may be under way (an event routed again after its routing was
-- dead-lettered, or one whose arrival the web did not record, takes a new number)
local function o_enter(p, ref, id, event)
  local q, w, a = o_keys(p, ref)
  local seq = redis.call('ZSCORE', a, event)
  if seq then
    local top = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
    if top[1] and tonumber(seq) < tonumber(top[2]) and redis.call('SISMEMBER', w, top[1]) == 0 then
      seq = nil
    end
  end
  if not seq then seq = redis.call('INCR', p .. 'seq') end
  redis.call('ZADD', q, 'NX', seq, id)
end
-- the event's routing settled: the keys waiting for it look again
local function o_routed(p, event, owned, due, out)
  local after = p .. 'ordafter:' .. event
  local refs = redis.call('SMEMBERS', after)
  if #refs == 0 then return end
  redis.call('DEL', after)
  for _, raw in ipairs(refs) do o_wake(p, cjson.decode(raw), owned, due, out) end
end
"""

#: KEYS: done, gen, lock, attempt counter, owned set (or the counter again);
#: ARGV: expected generation, lock ms, ttl s, prefix, destination, field, h, delivery id,
#: due of a woken one. As ``deliveries._BEGIN``, and: ``gone`` (no longer in its queue:
#: a copy of one settled), ``queued`` (not its turn: parked; then the delivery whose turn
#: it is, if that one was parked, woken: member, task).
BEGIN = (
    LIBRARY
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'done', 0} end
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then
  return {'stale', 0}
end
local p, id = ARGV[4], ARGV[8]
local ref = {ARGV[5], ARGV[6], ARGV[7]}
local owned = KEYS[5] ~= KEYS[4] and KEYS[5] or ''
local q = o_keys(p, ref)
if not redis.call('ZSCORE', q, id) or not o_pending(p, 'deliver:' .. id) then
  return {'gone', 0}
end
local first, waits = o_turn(p, ref)
if first ~= id or waits ~= '' then
  o_park(p, ref, id, owned)
  local out = {'queued', 0}
  if first ~= id then o_wake(p, ref, owned, ARGV[9], out) end
  return out
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return {'busy', 0} end
local n = redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[3])
if owned ~= '' then redis.call('SADD', owned, 'deliver:' .. id) end
return {'go', n}
"""
)

#: ARGV: prefix, destination, field, h, delivery id, 'done' or 'block', owned set ('' for
#: none), due of a woken one, the block's record (JSON). Returns the woken: member, task.
_SETTLE = (
    LIBRARY
    + """
local p, id = ARGV[1], ARGV[5]
local ref = {ARGV[2], ARGV[3], ARGV[4]}
local q, w, _, b = o_keys(p, ref)
if not redis.call('ZSCORE', q, id) then return {} end
if ARGV[6] == 'block' then
  redis.call('HSET', b, ref[3], ARGV[9])
  redis.call('SADD', p .. 'ordb', ref[1])
  return {}
end
redis.call('ZREM', q, id)
redis.call('SREM', w, id)
local out = {}
o_wake(p, ref, ARGV[7], ARGV[8], out)
return out
"""
)

#: ARGV: prefix, event id, owned set (''), due. Returns the woken: member, task, …
_ROUTED = (
    LIBRARY
    + """
local out = {}
o_routed(ARGV[1], ARGV[2], ARGV[3], ARGV[4], out)
return out
"""
)

#: ARGV: prefix, owned set (''), due, destination, delivery id ('' for every key whose
#: dead letter is gone). Releases the key the delivery's dead letter blocks (unless it is
#: pending again: replayed); returns the woken: member, task, …
_UNBLOCK = (
    LIBRARY
    + """
local p, owned, due, only = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local out = {}
local function release(d)
  local blocks = redis.call('HGETALL', p .. 'ordb:' .. d)
  if #blocks == 0 then redis.call('SREM', p .. 'ordb', d) end
  for i = 1, #blocks, 2 do
    local record = cjson.decode(blocks[i + 1])
    local ref = {d, record['by'], blocks[i]}
    local id = record['id']
    if only ~= '' and id == only and not o_pending(p, 'deliver:' .. id) then
      local q, w, _, b = o_keys(p, ref)
      redis.call('HDEL', b, ref[3])
      redis.call('ZREM', q, id)
      redis.call('SREM', w, id)
    end
    if only == '' or id == only then o_wake(p, ref, owned, due, out) end
  end
end
if ARGV[4] ~= '' then release(ARGV[4])
else for _, d in ipairs(redis.call('SMEMBERS', p .. 'ordb')) do release(d) end end
return out
"""
)


def key_of(value: str) -> str:
    """The short hash that names a key's state (16 hex digits of its sha256)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def new_order(by: str, value: str, block: bool) -> Order:
    return {"by": by, "value": value, "key": key_of(value), "block": block}


@dataclass(frozen=True)
class Blocked:
    """A key a dead letter holds: the field's ``value``, the dead-lettered ``delivery_id``
    and ``since`` when (epoch seconds)."""

    by: str
    value: str
    delivery_id: str
    since: float


class Ordering:
    def __init__(self, client: redis.Redis, pending: Pending, ttl: float) -> None:
        self.redis = client
        self.pending = pending
        self.ttl = int(ttl)  #: seconds an attempt counter is kept (the history's)
        self._begin = client.register_script(BEGIN)
        self._unblock = client.register_script(_UNBLOCK)

    def _owned(self) -> str:
        return keys.owned(self.pending.node) if self.pending.node else ""

    def _due(self) -> float:
        return time.time() + self.pending.grace

    def arrival_keys(self, values: Sequence[tuple[str, str]]) -> list[str]:
        """The arrival sets of an event with these ``(field, value)`` pairs."""
        return [keys.arrivals(by, key_of(value)) for by, value in values]

    def begin(self, job: Job, hold: float) -> tuple[str, int, list[Job]]:
        """:meth:`DeliveryState.begin` for an ordered delivery: also ``gone`` (a copy of
        one settled: dropped) and ``queued`` (not its turn: parked); and the delivery
        woken meanwhile, to publish."""
        did, order = job["delivery_id"], job["order"]
        counter = keys.delivery(did, "n")
        owned = keys.owned(self.pending.node) if self.pending.node else counter
        ks = [keys.delivery(did, "done"), keys.delivery(did, "gen"), keys.delivery(did, "lock")]
        args: list[Any] = [job.get("gen", 0), int(hold * 1000), self.ttl, keys.PREFIX]
        args += [job["destination"], order["by"], order["key"], did, self._due()]
        reply = self._begin(keys=[*ks, counter, owned], args=args)
        verdict = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        return verdict, int(reply[1]), woken_jobs(reply[2:])

    def settle(self, pipe: Any, job: Job, block: bool = False) -> None:
        """Add to ``pipe`` (as its last command): the ordered ``job`` settled, so its key's
        next may go (its result: :func:`woken_jobs`); with ``block``, it stays first and
        holds its key. The script's text is sent, as the search settlement's is: a
        registered script costs a SCRIPT EXISTS round trip before a transaction."""
        order = job["order"]
        record = dumps(
            {"id": job["delivery_id"], "by": order["by"], "value": order["value"]}
            | {"since": time.time()}
        )
        args: list[Any] = [keys.PREFIX, job["destination"], order["by"], order["key"]]
        args += [
            job["delivery_id"],
            "block" if block else "done",
            self._owned(),
            self._due(),
            record,
        ]
        pipe.eval(_SETTLE, 0, *args)

    def routed(self, pipe: Any, event_id: str) -> None:
        """Add to ``pipe`` (last): the event's routing settled without the routing call (a
        dead letter), so the keys waiting for it look again (result: :func:`woken_jobs`)."""
        pipe.eval(_ROUTED, 0, keys.PREFIX, event_id, self._owned(), self._due())

    def unblock(self, destination: str | None, delivery_id: str = "", client: Any = None) -> Any:
        """Release the key ``delivery_id``'s dead letter holds (deleted: not replayed) and
        wake its next; with no destination, every key whose dead letter is gone (purged,
        expired). With a pipeline ``client``, added to it (result: :func:`woken_jobs`)."""
        args: list[Any] = [keys.PREFIX, self._owned(), self._due(), destination or "", delivery_id]
        reply = self._unblock(keys=[], args=args, client=client)
        return reply if client is not None else woken_jobs(reply)

    # -- what operators see -----------------------------------------------------------------

    def blocked(self, destinations: Sequence[str]) -> dict[str, list[Blocked]]:
        """Each destination's blocked keys, oldest first (none: absent)."""
        pipe = self.redis.pipeline(transaction=False)
        for name in destinations:
            pipe.hgetall(keys.order("ordb", name))
        out: dict[str, list[Blocked]] = {}
        for name, found in zip(destinations, pipe.execute(), strict=True):
            items = [_blocked(raw) for raw in found.values()]
            if items:
                out[name] = sorted(items, key=lambda item: item.since)
        return out

    def waits(self, job: Job) -> tuple[str, str] | None:
        """Why the parked ordered ``job`` waits: (``after``, the event id before it: the
        key's first's, or an earlier event's still to be routed; ``why``: ``turn``,
        ``blocked`` or ``routing``); None when it is not parked."""
        did, order = job["delivery_id"], job["order"]
        name, key = job["destination"], order["key"]
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(keys.order("ordw", name, key), did)
        pipe.zrange(keys.order("ordq", name, key), 0, 0, withscores=True)
        pipe.zscore(keys.order("ordq", name, key), did)
        pipe.hget(keys.order("ordb", name), key)
        parked, top, seq, block = pipe.execute()
        if not parked or not top or seq is None:
            return None
        first = str(top[0][0])
        if first != did:
            blocked = block is not None and loads(block).get("id") == first
            return first.partition(":")[0], "blocked" if blocked else "turn"
        for event_id in texts(
            self.redis.zrangebyscore(keys.arrivals(order["by"], key), "-inf", f"({seq}")
        ):
            if self.redis.hexists(keys.PENDING_TASKS, keys.route_member(event_id)):
                return event_id, "routing"
        return None


def woken_jobs(reply: Sequence[Any]) -> list[Job]:
    """The jobs of the woken deliveries a script returned (member, task, …)."""
    flat = texts(reply)
    jobs = []
    for raw in flat[1::2]:
        try:
            spec = loads(raw)
            jobs.append(spec["args"][0])
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # does not decode: the sweeper finds it overdue and makes it poison
    return jobs


def _blocked(raw: str) -> Blocked:
    data = loads(raw)
    return Blocked(str(data["by"]), str(data["value"]), str(data["id"]), float(data["since"]))
