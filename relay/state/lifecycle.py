"""Message lifecycle in Redis: per ``transid``, whether its final receipt came, and when
one is overdue (the rules' ``lifecycle: {final_receipt_within: …}``).

Memory is what bounds this (each message in flight has a record and a deadline; 1,000,000
of them fit in about 200 MB: ``python -m bench lifecycle``), so nothing is a key of its
own:

- a message's record is one field of the hash of the day of its first receipt
  (``relay:msgs:<day>``, which expires ``RELAY_HISTORY_TTL`` after that day ends), its
  value one packed string::

      <state><first received, ms>,<first own time − first received, ms>|<last receipt>

  ``state`` is ``o`` (open: receipts, none final), ``v`` (overdue: its
  ``receipt_overdue`` event fired), ``f`` (final in time) or ``l`` (late: final after it
  was overdue). The last receipt (status, code, destination, callbackData, correlationid,
  separated by ``\\x1f``) is kept while the message is open or overdue;
- its deadline is an entry in the list of the second it falls due
  (``relay:lifecycle:due:<second>``), the seconds with entries in the sorted set
  ``relay:lifecycle:due``. A final receipt in time leaves the entry, which is passed
  over when its second comes (the record is no longer open).

The record changes in the routing call that stores the receipt (:data:`LIBRARY` in
``relay.state.store``), so a receipt counts once, with its routing. Deadlines are claimed
once (one Lua call moves them to ``relay:lifecycle:claimed:<node>``) and given up by
:meth:`Lifecycle.fired` once the overdue event is accepted; when the claiming node dies
first, the sweeper that takes its work over puts them back, due at once (the event's
dedupe on ``transid`` keeps a second firing from being accepted).
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import redis

from relay.codes import is_final
from relay.events import DELIVERY_RECEIPT, Event
from relay.state import keys
from relay.state.client import texts
from relay.state.index import accept_score
from relay.times import epoch

#: a message's states in its record
OPEN, OVERDUE, FINAL, LATE = "o", "v", "f", "l"
STATES = {OPEN: "open", OVERDUE: "overdue", FINAL: "final", LATE: "late"}

#: what the routing call says a receipt did to its message (its first reply)
UNTRACKED, TRACKED, FINAL_IN_TIME, FINAL_LATE = 0, 1, 2, 3

DAY_MS = 86_400_000
#: upper bounds (seconds) of the buckets the time to final is counted in per hour, for the
#: console (``relay:lifecycle:stats:<hour>``: ``le<bound>`` → count, and ``late``)
FINAL_BOUNDS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400, 259200)
STATS_TTL = 25 * 3600  #: seconds an hour's counts are kept (the console shows 24 h)
SEPARATOR = "\x1f"  #: between the last receipt's fields (taken out of their values)

#: Lua shared by the routing call and the claim: l_find finds a message's record (the hash
#: of its day, its value) among the days still kept; l_receipt(prefix, ARGV, i) applies the
#: receipt whose arguments start at ARGV[i] (:func:`receipt_args`) and returns
#: {what, first own time (ms)}
LIBRARY = """
local function l_find(p, tid, now, days)
  local today = math.floor(now / 86400000)
  for day = today, today - days, -1 do
    local key = p .. 'msgs:' .. day
    local rec = redis.call('HGET', key, tid)
    if rec then return key, rec end
  end
  return p .. 'msgs:' .. today, false
end

local function l_keep(key, tid, rec, ttl)
  redis.call('HSET', key, tid, rec)
  local day = tonumber(string.match(key, '(%-?%d+)$'))
  redis.call('EXPIREAT', key, (day + 1) * 86400 + ttl)
end

local function l_receipt(p, args, i)
  local tid = args[i]
  if tid == nil or tid == '' then return {0, ''} end
  local final, within, now = args[i + 1], tonumber(args[i + 2]), tonumber(args[i + 3])
  local own, last, ttl = args[i + 4], args[i + 5], tonumber(args[i + 6])
  local key, rec = l_find(p, tid, now, math.ceil(ttl / 86400) + 1)
  if not rec then
    if final == '1' then
      l_keep(key, tid, 'f' .. args[i + 3] .. ',' .. own .. '|', ttl)
      return {0, ''}
    end
    l_keep(key, tid, 'o' .. args[i + 3] .. ',' .. own .. '|' .. last, ttl)
    local second = math.ceil((now + within) / 1000)
    local bucket = p .. 'lifecycle:due:' .. second
    redis.call('RPUSH', bucket, tid)
    redis.call('EXPIRE', bucket, math.ceil(within / 1000) + ttl)
    redis.call('ZADD', p .. 'lifecycle:due', second, second)
    return {1, ''}
  end
  local state, first, delta = string.match(rec, '^(%a)(%d+),(%-?%d+)|')
  if state ~= 'o' and state ~= 'v' then return {0, ''} end
  local first_own = tostring(tonumber(first) + tonumber(delta))
  if final == '1' then
    local to = (state == 'o') and 'f' or 'l'
    l_keep(key, tid, to .. first .. ',' .. delta .. '|', ttl)
    return {(state == 'o') and 2 or 3, first_own}
  end
  l_keep(key, tid, state .. first .. ',' .. delta .. '|' .. last, ttl)
  return {1, ''}
end
"""

#: KEYS: due seconds, claimed set of the node; ARGV: now (ms), most, key prefix, days kept.
#: Returns transid, record, … of the messages claimed (each now overdue), first those the
#: node claimed before and did not fire (its accept failed: they go again, deduped).
_CLAIM = (
    LIBRARY
    + """
local now, most, p, days = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local out = {}
for _, tid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local _, rec = l_find(p, tid, now, days)
  if rec then
    out[#out + 1] = tid
    out[#out + 1] = rec
  else
    redis.call('SREM', KEYS[2], tid)
  end
end
local seconds = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', math.floor(now / 1000))
for _, second in ipairs(seconds) do
  if #out >= 2 * most then break end
  local bucket = p .. 'lifecycle:due:' .. second
  local tids = redis.call('LPOP', bucket, most - #out / 2) or {}
  if redis.call('LLEN', bucket) == 0 then redis.call('ZREM', KEYS[1], second) end
  for _, tid in ipairs(tids) do
    local key, rec = l_find(p, tid, now, days)
    if rec then
      local state = string.sub(rec, 1, 1)
      if state == 'o' or state == 'v' then
        if state == 'o' then
          rec = 'v' .. string.sub(rec, 2)
          redis.call('HSET', key, tid, rec)
        end
        redis.call('SADD', KEYS[2], tid)
        out[#out + 1] = tid
        out[#out + 1] = rec
      end
    end
  end
end
return out
"""
)

#: KEYS: due seconds, claimed set of the dead node; ARGV: now (ms), key prefix, ttl (s).
#: Returns how many.
_RELEASE = """
local claimed = redis.call('SMEMBERS', KEYS[2])
if #claimed > 0 then
  local second = math.floor(tonumber(ARGV[1]) / 1000)
  local bucket = ARGV[2] .. 'lifecycle:due:' .. second
  for _, tid in ipairs(claimed) do redis.call('RPUSH', bucket, tid) end
  redis.call('EXPIRE', bucket, ARGV[3])
  redis.call('ZADD', KEYS[1], second, second)
end
redis.call('DEL', KEYS[2])
return #claimed
"""


class Outcome(NamedTuple):
    """What a receipt did to its message: one of UNTRACKED, TRACKED, FINAL_IN_TIME,
    FINAL_LATE; for a final one, the first receipt's own time (epoch seconds; its receive
    time when it had none)."""

    what: int = UNTRACKED
    first_own: float | None = None


class Message(NamedTuple):
    """A message's record: its state (:data:`STATES`), its first receipt's receive time
    and own time (epoch seconds), and its last receipt's fields while it is not final."""

    transid: str
    state: str
    first_received: float
    first_own: float
    last_status: str = ""
    last_code: str = ""
    destination: str = ""
    callback_data: str = ""
    correlation_id: str = ""


def receipt_args(event: Event, within: float | None, ttl: int) -> list[Any]:
    """The routing call's lifecycle arguments for ``event`` (read by :data:`LIBRARY`):
    nothing to do (``['']``) without ``within`` or for anything but a receipt with a
    ``transid``."""
    transid = event.get("transid")
    if not within or event.get("kind") != DELIVERY_RECEIPT or not transid:
        return [""]
    received = accept_score(event) or int(time.time() * 1000)
    own = epoch(event.get("timestamp"))
    status = event.get("status", "")
    last = [status, event.get("code", ""), event.get("destination", "")]
    last += [event.get("callback_data", ""), event.get("correlation_id", "")]
    return [
        transid,
        "1" if is_final(status) else "0",
        int(within * 1000),
        received,
        int(own * 1000) - received if own is not None else 0,
        SEPARATOR.join(str(value).replace(SEPARATOR, "") for value in last),
        ttl,
    ]


def outcome(reply: list[Any]) -> Outcome:
    """The routing call's lifecycle reply ``[what, first own ms]`` as an :class:`Outcome`."""
    what, first = int(reply[0]), reply[1]
    text = first.decode() if isinstance(first, bytes) else str(first or "")
    return Outcome(what, int(text) / 1000 if text else None)


def decode(transid: str, record: str) -> Message | None:
    """A packed record as a :class:`Message` (None when it does not read as one)."""
    head, _, last = record.partition("|")
    first, _, delta = head[1:].partition(",")
    if not head or head[0] not in STATES or not first.isdigit():
        return None
    try:
        first_own = int(first) + int(delta)
    except ValueError:
        return None
    fields = last.split(SEPARATOR)[:5] if last else []
    return Message(transid, STATES[head[0]], int(first) / 1000, first_own / 1000, *fields)


class Lifecycle:
    """Message records and deadlines (keys ``relay:msgs:*``, ``relay:lifecycle:*``)."""

    def __init__(self, client: redis.Redis, node: str | None = None, ttl: float = 7 * 86400):
        self.redis = client
        self.node = node
        self.ttl = int(ttl)  #: RELAY_HISTORY_TTL: how long a message's record is kept
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    @property
    def days(self) -> int:
        """The days before today whose records may still be kept."""
        return math.ceil(self.ttl / 86400) + 1

    def claim_due(self, now: float | None = None, limit: int = 500) -> list[Message]:
        """The messages whose deadline passed, each claimed by this node alone (held in
        its claimed set until :meth:`fired`) and from now on overdue; first, again, those
        it claimed before and did not fire."""
        if not self.node:
            raise ValueError("claiming deadlines needs a worker node")
        moment = int((time.time() if now is None else now) * 1000)
        flat = texts(
            self._claim(
                keys=[keys.LIFECYCLE_DUE, keys.lifecycle_claimed(self.node)],
                args=[moment, limit, keys.PREFIX, self.days],
            )
        )
        found = (decode(flat[i], flat[i + 1]) for i in range(0, len(flat), 2))
        return [message for message in found if message is not None]

    def fired(self, transids: list[str]) -> None:
        """The overdue events of ``transids`` are accepted: this node holds them no more."""
        if transids and self.node:
            self.redis.srem(keys.lifecycle_claimed(self.node), *transids)

    def release(self, node: str, now: float | None = None) -> int:
        """The deadlines dead ``node`` claimed and did not fire, due again at once."""
        moment = int((time.time() if now is None else now) * 1000)
        keys_ = [keys.LIFECYCLE_DUE, keys.lifecycle_claimed(node)]
        return int(self._release(keys=keys_, args=[moment, keys.PREFIX, self.ttl]))

    def message(self, transid: str, now: float | None = None) -> Message | None:
        """The record of ``transid`` (None when it has none: lifecycle off, or expired)."""
        today = int((time.time() if now is None else now) * 1000) // DAY_MS
        pipe = self.redis.pipeline(transaction=False)
        for day in range(today, today - self.days - 1, -1):
            pipe.hget(keys.messages(day), transid)
        found = next((raw for raw in pipe.execute() if raw), None)
        return decode(transid, found) if found else None

    def due_count(self) -> int:
        """Deadlines not yet passed or claimed (those of messages final in time included,
        until their second comes)."""
        seconds = texts(self.redis.zrange(keys.LIFECYCLE_DUE, 0, -1))
        if not seconds:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for second in seconds:
            pipe.llen(keys.lifecycle_due(second))
        return sum(int(n) for n in pipe.execute())

    # -- hourly counts for the console ------------------------------------------------------

    def count_final(self, seconds: float | None, late: bool, now: float | None = None) -> None:
        """Count a final receipt in this hour: its time to final (when known), and whether
        it came late."""
        hour = int((time.time() if now is None else now) // 3600)
        key = keys.lifecycle_stats(hour)
        pipe = self.redis.pipeline(transaction=False)
        if seconds is not None:
            bound = next((b for b in FINAL_BOUNDS if seconds <= b), None)
            pipe.hincrby(key, f"le{bound}" if bound else "le+Inf", 1)
        if late:
            pipe.hincrby(key, "late", 1)
        pipe.expire(key, STATS_TTL)
        pipe.execute()

    def final_counts(self, hours: int, now: float | None = None) -> dict[str, int]:
        """The counts of the last ``hours`` hours (this one included), summed."""
        hour = int((time.time() if now is None else now) // 3600)
        pipe = self.redis.pipeline(transaction=False)
        for back in range(hours):
            pipe.hgetall(keys.lifecycle_stats(hour - back))
        total: dict[str, int] = {}
        for counts in pipe.execute():
            for name, value in counts.items():
                total[name] = total.get(name, 0) + int(value)
        return total
