"""Notification groups in Redis: alerts gathered per group, claimed once for each message.

:meth:`AlertState.record` adds one alert to its group (one Lua call): it counts it by
kind, keeps it among the group's latest examples and, when the group has no message due,
schedules one: ``group_wait`` after this alert, and never sooner than ``group_interval``
after the group's previous message. :meth:`AlertState.claim_due` takes the groups whose
message is due (one Lua call: removed from the schedule, counts and examples reset), so
two workers flushing at once never send the same group twice. A group's keys expire
``group_wait + group_interval`` (plus a margin) after its last alert or message; the next
alert then starts it afresh.

A claimed message is held by the worker node that claimed it until :meth:`sent` says it
went (``relay:alerts:claimed:<node>``). When that node dies first, the sweeper that takes
its work over calls :meth:`release`: the message's counts and examples go back into their
group, which is due at once (at least once: a node that dies between sending and
:meth:`sent` has its message sent again).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import redis

from relay.events import AlertExample, AlertGroup, new_alert_group
from relay.state import keys
from relay.state.client import dumps, loads

#: examples kept per group and message
EXAMPLES = 5
#: seconds a group's keys outlive its wait and interval
MARGIN = 60

#: KEYS: schedule, group hash, examples; ARGV: now, wait, interval, notification, labels,
#: kind, example, examples kept, ttl, group id
_RECORD = """
local now = tonumber(ARGV[1])
redis.call('HSETNX', KEYS[2], 'notification', ARGV[4])
redis.call('HSETNX', KEYS[2], 'labels', ARGV[5])
redis.call('HSETNX', KEYS[2], 'first', ARGV[1])
redis.call('HSET', KEYS[2], 'ttl', ARGV[9])
redis.call('HINCRBY', KEYS[2], 'count:' .. ARGV[6], 1)
redis.call('LPUSH', KEYS[3], ARGV[7])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[8]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[9])
redis.call('EXPIRE', KEYS[3], ARGV[9])
if redis.call('ZSCORE', KEYS[1], ARGV[10]) then return 0 end
local due = now + tonumber(ARGV[2])
local sent = redis.call('HGET', KEYS[2], 'sent')
if sent then due = math.max(due, tonumber(sent) + tonumber(ARGV[3])) end
redis.call('ZADD', KEYS[1], due, ARGV[10])
return 1
"""

#: KEYS: schedule, claimed hash of the node (the schedule again: no node);
#: ARGV: now, most groups, group key prefix, 1 when the node holds what it claims
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then
    local examples = redis.call('LRANGE', key .. ':examples', 0, -1)
    redis.call('DEL', key .. ':examples')
    local ttl = 0
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 6) == 'count:' then redis.call('HDEL', key, fields[i]) end
      if fields[i] == 'ttl' then ttl = tonumber(fields[i + 1]) end
    end
    redis.call('HSET', key, 'sent', ARGV[1])
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    if ARGV[4] == '1' then
      redis.call('HSET', KEYS[2], id, cjson.encode({fields = fields, examples = examples}))
    end
    out[#out + 1] = {id, fields, examples}
  end
end
return out
"""

#: KEYS: schedule, claimed hash of the dead node; ARGV: now, group key prefix, examples kept
_RELEASE = """
local claimed = redis.call('HGETALL', KEYS[2])
for i = 1, #claimed, 2 do
  local id = claimed[i]
  local message = cjson.decode(claimed[i + 1])
  local key = ARGV[2] .. id
  local fields = message.fields
  local ttl, sent = 0, nil
  for j = 1, #fields, 2 do
    local name, value = fields[j], fields[j + 1]
    if string.sub(name, 1, 6) == 'count:' then
      redis.call('HINCRBY', key, name, tonumber(value))
    elseif name == 'sent' then
      sent = value
    elseif name ~= 'ttl' then
      redis.call('HSETNX', key, name, value)
    else
      ttl = tonumber(value)
    end
  end
  if sent then redis.call('HSET', key, 'sent', sent) else redis.call('HDEL', key, 'sent') end
  for _, example in ipairs(message.examples) do
    redis.call('RPUSH', key .. ':examples', example)
  end
  redis.call('LTRIM', key .. ':examples', 0, tonumber(ARGV[3]) - 1)
  if ttl > 0 then
    redis.call('HSET', key, 'ttl', ttl)
    redis.call('EXPIRE', key, ttl)
    redis.call('EXPIRE', key .. ':examples', ttl)
  end
  local due = redis.call('ZSCORE', KEYS[1], id)
  if not due or tonumber(due) > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], id)
  end
end
redis.call('DEL', KEYS[2])
return #claimed / 2
"""


class AlertState:
    """Notification groups (keys ``relay:alerts:due`` and ``relay:alert:*``)."""

    def __init__(self, client: redis.Redis, node: str | None = None) -> None:
        self.redis = client
        self.node = node  #: the worker node that holds what it claims (None: nobody)
        self._record = client.register_script(_RECORD)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def record(
        self,
        group: str,
        notification: str,
        labels: Mapping[str, str],
        example: AlertExample,
        wait: float,
        interval: float,
        now: float | None = None,
    ) -> bool:
        """Add ``example`` (an alert of ``example["kind"]``) to ``group``; True when this
        alert scheduled the group's next message."""
        ttl = math.ceil(wait + interval) + MARGIN
        scheduled = self._record(
            keys=[keys.ALERTS_DUE, keys.alert_group(group), keys.alert_examples(group)],
            args=[
                time.time() if now is None else now,
                wait,
                interval,
                notification,
                dumps(dict(labels)),
                example.get("kind", ""),
                dumps(example),
                EXAMPLES,
                ttl,
                group,
            ],
        )
        return bool(scheduled)

    def claim_due(self, now: float | None = None, limit: int = 100) -> list[AlertGroup]:
        """The groups whose message is due, each claimed by this caller alone (and held by
        this node until :meth:`sent`)."""
        claimed = keys.alerts_claimed(self.node) if self.node else keys.ALERTS_DUE
        reply = self._claim(
            keys=[keys.ALERTS_DUE, claimed],
            args=[
                time.time() if now is None else now,
                limit,
                keys.ALERT_PREFIX,
                1 if self.node else 0,
            ],
        )
        return [_group(item) for item in reply]

    def sent(self, group: str) -> None:
        """The message of ``group`` this node claimed went (or was given up on for good)."""
        if self.node:
            self.redis.hdel(keys.alerts_claimed(self.node), group)

    def release(self, node: str, now: float | None = None) -> int:
        """The messages dead ``node`` claimed and never sent, back into their groups, due
        at once; returns how many."""
        released = self._release(
            keys=[keys.ALERTS_DUE, keys.alerts_claimed(node)],
            args=[time.time() if now is None else now, keys.ALERT_PREFIX, EXAMPLES],
        )
        return int(released)

    def next_due(self) -> float | None:
        """When the earliest scheduled message is due (epoch seconds), if any."""
        first = self.redis.zrange(keys.ALERTS_DUE, 0, 0, withscores=True)
        return float(first[0][1]) if first else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _group(item: Any) -> AlertGroup:
    group, flat, examples = item
    fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
    counts = {
        name.removeprefix("count:"): int(value)
        for name, value in fields.items()
        if name.startswith("count:")
    }
    previous = fields.get("sent")
    return new_alert_group(
        _text(group),
        fields.get("notification", ""),
        loads(fields.get("labels", "{}")),
        counts,
        [loads(example) for example in examples],
        float(fields.get("first", 0)),
        float(previous) if previous is not None else None,
    )
