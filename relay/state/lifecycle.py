"""Message lifecycle in Redis: per ``transid``, whether its final receipt came, and when
one is overdue (the rules' ``lifecycle: {final_receipt_within: …}``).

A message's record (``relay:msg:<transid>``) is one packed string, kept
``RELAY_HISTORY_TTL`` after its last receipt::

    <state><first received, ms>,<first own time, ms>|<last receipt: JSON array>

``state`` is ``o`` (open: receipts, none final, its deadline in ``relay:lifecycle:due``),
``v`` (overdue: its ``receipt_overdue`` event fired), ``f`` (final in time) or ``l``
(late: final after it was overdue). The JSON array (status, code, destination,
callbackData, correlationid) is kept only while the message is open or overdue. The
record changes in the routing call that stores the receipt (:data:`LIBRARY` in
``relay.state.store``), so a receipt counts once, with its routing.

Deadlines are claimed once (one Lua call moves them to ``relay:lifecycle:claimed:<node>``)
and given up by :meth:`Lifecycle.fired` once the overdue event is accepted; when the
claiming node dies first, the sweeper that takes its work over puts them back, due at
once (the event's dedupe on ``transid`` keeps a second firing from being accepted).
"""

from __future__ import annotations

import json
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

#: Lua shared with the routing call: l_receipt(prefix, ARGV, i) applies the receipt whose
#: arguments start at ARGV[i] (:func:`receipt_args`) and returns {what, first own time}
LIBRARY = """
local function l_receipt(p, args, i)
  local tid = args[i]
  if tid == nil or tid == '' then return {0, ''} end
  local final, within, now, own = args[i + 1], tonumber(args[i + 2]), args[i + 3], args[i + 4]
  local payload, ttl = args[i + 5], args[i + 6]
  local key = p .. 'msg:' .. tid
  local rec = redis.call('GET', key)
  if not rec then
    if final == '1' then
      redis.call('SET', key, 'f' .. now .. ',' .. own .. '|', 'EX', ttl)
      return {0, ''}
    end
    redis.call('SET', key, 'o' .. now .. ',' .. own .. '|' .. payload, 'EX', ttl)
    redis.call('ZADD', p .. 'lifecycle:due', tonumber(now) + within, tid)
    return {1, ''}
  end
  local state, first, first_own = string.match(rec, '^(%a)(%d+),(%d+)|')
  if state ~= 'o' and state ~= 'v' then return {0, ''} end
  if final == '1' then
    if state == 'o' then redis.call('ZREM', p .. 'lifecycle:due', tid) end
    local to = (state == 'o') and 'f' or 'l'
    redis.call('SET', key, to .. first .. ',' .. first_own .. '|', 'EX', ttl)
    return {(state == 'o') and 2 or 3, first_own}
  end
  redis.call('SET', key, state .. first .. ',' .. first_own .. '|' .. payload, 'EX', ttl)
  return {1, ''}
end
"""

#: KEYS: deadlines, claimed set of the node; ARGV: now (ms), most, record key prefix.
#: Returns transid, record, … of the messages claimed (each now overdue).
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, tid in ipairs(due) do
  redis.call('ZREM', KEYS[1], tid)
  local key = ARGV[3] .. tid
  local rec = redis.call('GET', key)
  if rec then
    local state = string.sub(rec, 1, 1)
    if state == 'o' or state == 'v' then
      if state == 'o' then
        rec = 'v' .. string.sub(rec, 2)
        redis.call('SET', key, rec, 'KEEPTTL')
      end
      redis.call('SADD', KEYS[2], tid)
      out[#out + 1] = tid
      out[#out + 1] = rec
    end
  end
end
return out
"""

#: KEYS: deadlines, claimed set of the dead node; ARGV: now (ms). Returns how many.
_RELEASE = """
local claimed = redis.call('SMEMBERS', KEYS[2])
for _, tid in ipairs(claimed) do redis.call('ZADD', KEYS[1], ARGV[1], tid) end
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
        int(own * 1000) if own is not None else received,
        json.dumps(last, separators=(",", ":"), ensure_ascii=False),
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
    first, _, first_own = head[1:].partition(",")
    if not head or head[0] not in STATES or not first.isdigit() or not first_own.isdigit():
        return None
    fields: list[str] = []
    if last:
        try:
            fields = [str(value) for value in json.loads(last)][:5]
        except ValueError:
            fields = []
    return Message(transid, STATES[head[0]], int(first) / 1000, int(first_own) / 1000, *fields)


class Lifecycle:
    """Message records and deadlines (keys ``relay:msg:*``, ``relay:lifecycle:*``)."""

    def __init__(self, client: redis.Redis, node: str | None = None) -> None:
        self.redis = client
        self.node = node
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def claim_due(self, now: float | None = None, limit: int = 500) -> list[Message]:
        """The messages whose deadline passed, each claimed by this node alone (held in
        its claimed set until :meth:`fired`) and from now on overdue."""
        if not self.node:
            raise ValueError("claiming deadlines needs a worker node")
        moment = int((time.time() if now is None else now) * 1000)
        flat = texts(
            self._claim(
                keys=[keys.LIFECYCLE_DUE, keys.lifecycle_claimed(self.node)],
                args=[moment, limit, keys.MESSAGE_PREFIX],
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
        return int(self._release(keys=keys_, args=[moment]))

    def message(self, transid: str) -> Message | None:
        """The record of ``transid`` (None when it has none: lifecycle off, or expired)."""
        raw = self.redis.get(keys.message(transid))
        return decode(transid, raw.decode() if isinstance(raw, bytes) else raw) if raw else None

    def open_count(self) -> int:
        """Messages waiting for a final receipt before their deadline."""
        return int(self.redis.zcard(keys.LIFECYCLE_DUE))
