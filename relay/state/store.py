"""Redis state: dedupe claims, event history and look-ups.

Every key starts with ``relay:``. Values are JSON written with ``ensure_ascii=True`` so
that any text a sender manages to put in a payload (lone surrogates included) can be
stored and read back.

Keys:
    relay:dedupe:<sha256>     event id of the first copy of a notification
    relay:event:<id>          the event (JSON)
    relay:history:<id>        its life: a list of JSON entries, oldest first
    relay:ref:<value>         sorted set of event ids sharing a transid or tid
    relay:routed:<id>         set once the event was routed (a second route task is dropped)
    relay:dlv:<delivery id>:n      attempts started (counted before each try: a try that
                                   kills its worker still counts)
    relay:dlv:<delivery id>:gen    generation of the delivery's live task message; a message
                                   of an older generation is a stale copy and is dropped
    relay:dlv:<delivery id>:lock   held while an attempt runs
    relay:dlv:<delivery id>:done   set once the destination accepted it
    relay:dlv:<delivery id>:log    every finished attempt (JSON list)
    relay:dead:<delivery id>       a dead letter (JSON); kept until purged
    relay:dead                     sorted set of dead-letter ids by time
    relay:pending              sorted set: every task not yet settled ("route:<event id>",
                               "deliver:<delivery id>"), scored by when it is overdue
    relay:pending:tasks        hash: the same members → the task to publish again
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import redis

from relay.errors import UnavailableError
from relay.events import utc_now_iso

PREFIX = "relay:"

INBOX = PREFIX + "inbox"  #: event ids accepted and not yet handed to Celery (a list)

#: KEYS: pending zset, pending hash, inbox, then one dedupe key per event;
#: ARGV: dedupe ttl (ms), then per event: id, pending due score, pending task JSON
_CLAIM = """
local out = {}
for i = 4, #KEYS do
  local j = (i - 4) * 3 + 2
  if redis.call('SET', KEYS[i], ARGV[j], 'NX', 'PX', ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[j + 1], 'route:' .. ARGV[j])
    redis.call('HSET', KEYS[2], 'route:' .. ARGV[j], ARGV[j + 2])
    redis.call('LPUSH', KEYS[3], ARGV[j])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def connect(url: str, timeout: float = 1.5) -> redis.Redis:
    """A client whose every call gives up after ``timeout`` seconds."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=True,
    )


def fingerprint(notification: object) -> str:
    """Same JSON content (whatever the key order or spacing) → same fingerprint."""
    canonical = json.dumps(notification, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Store:
    def __init__(
        self, client: redis.Redis, history_ttl: float, dedupe_ttl: float, grace: float = 600.0
    ) -> None:
        self.redis = client
        self.history_ttl = int(history_ttl)
        self.dedupe_ttl_ms = int(dedupe_ttl * 1000)
        self.deliveries = DeliveryState(client, history_ttl)
        self.dead_letters = DeadLetters(client)
        self.pending = Pending(client, grace)
        self._claim = client.register_script(_CLAIM)

    # -- dedupe ---------------------------------------------------------------------------

    def accept(self, fingerprints: Sequence[str], events: Sequence[dict]) -> list[bool]:
        """Per event, atomically, in one round trip: claim its fingerprint for the dedupe
        window, store its routing task as pending and put its id in the inbox. False = a
        duplicate (nothing written). Once this returns, the event is as durable as Redis:
        a worker's pump (``relay.worker.pump``) hands the inbox to Celery as ``relay.route``
        tasks, and the sweeper publishes again anything that goes missing on the way.
        """
        keys = [Pending.ZSET, Pending.TASKS, INBOX, *(_dedupe_key(fp) for fp in fingerprints)]
        due = time.time() + self.pending.grace
        args: list = [self.dedupe_ttl_ms]
        for event in events:
            args += [event["id"], due, dumps({"task": "relay.route", "args": [event]})]
        with _unavailable_on_error():
            return [bool(ok) for ok in self._claim(keys=keys, args=args)]

    def take_inbox(self, count: int, timeout: float) -> list[dict]:
        """Up to ``count`` accepted events from the inbox, oldest first, waiting up to
        ``timeout`` seconds for the first; each is the ``relay.route`` task spec stored with
        it (an id whose spec is gone was settled already and is skipped)."""
        first = self.redis.brpop([INBOX], timeout=timeout)
        if not first:
            return []
        ids = [first[1], *(self.redis.rpop(INBOX, count - 1) or [])]
        specs = self.redis.hmget(Pending.TASKS, ["route:" + event_id for event_id in ids])
        return [json.loads(spec) for spec in specs if spec]

    def inbox_size(self) -> int:
        return int(self.redis.llen(INBOX))

    # -- history --------------------------------------------------------------------------

    def is_routed(self, event_id: str) -> bool:
        """True once the event was routed: a second route task for it is a duplicate."""
        return bool(self.redis.exists(PREFIX + "routed:" + event_id))

    def record_event(
        self, event: dict, *entries: dict, jobs: Iterable[dict] = (), routed: bool = True
    ) -> None:
        """Store the event and append ``entries`` to its history; mark it routed, settle its
        routing and register ``jobs`` as pending deliveries — all in one transaction."""
        event_id = event["id"]
        score = time.time()
        pipe = self.redis.pipeline(transaction=True)
        self.pending.settle(pipe, "route:" + event_id)
        if routed:
            pipe.set(PREFIX + "routed:" + event_id, "1", ex=self.history_ttl)
        for job in jobs:
            self.pending.register(pipe, "deliver:" + job["delivery_id"], "relay.deliver", [job])
        pipe.set(PREFIX + "event:" + event_id, dumps(event), ex=self.history_ttl)
        for entry in entries:
            self._append(pipe, event_id, entry)
        for ref in _refs(event):
            pipe.zadd(PREFIX + "ref:" + ref, {event_id: score}, nx=True)
            pipe.expire(PREFIX + "ref:" + ref, self.history_ttl)
        pipe.execute()

    def add_history(self, event_id: str, entry: dict) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self._append(pipe, event_id, entry)
        pipe.execute()

    def _append(self, pipe, event_id: str, entry: dict) -> None:
        key = PREFIX + "history:" + event_id
        pipe.rpush(key, dumps({"at": utc_now_iso(), **entry}))
        pipe.expire(key, self.history_ttl)

    def event(self, event_id: str) -> dict | None:
        raw = self.redis.get(PREFIX + "event:" + event_id)
        return json.loads(raw) if raw else None

    def history(self, event_id: str) -> list[dict]:
        return [
            json.loads(item) for item in self.redis.lrange(PREFIX + "history:" + event_id, 0, -1)
        ]

    def find(self, ref: str) -> list[str]:
        """Event ids for a relay id, a transid or a tid, oldest first."""
        if self.redis.exists(PREFIX + "event:" + ref):
            return [ref]
        return list(self.redis.zrange(PREFIX + "ref:" + ref, 0, -1))


def _dedupe_key(fp: str) -> str:
    return PREFIX + "dedupe:" + fp


def _refs(event: dict) -> list[str]:
    return [value for value in (event.get("transid"), event.get("tid")) if value]


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    """Turns a Redis connection problem or timeout into UnavailableError."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise UnavailableError(f"redis: {exc}") from exc


class Pending:
    """An outbox of the tasks in flight, so none is lost between Redis and a worker.

    kombu's Redis transport pops a message, then records it as unacknowledged in a second
    command: a Redis restart between the two loses the message. Every task relay publishes
    is registered here (in the same pipeline as the state that created it) and settled when
    its work is done; a sweeper publishes again what stays overdue while the queues are
    empty. Tasks are idempotent, so a second copy is harmless.
    """

    ZSET = PREFIX + "pending"
    TASKS = PREFIX + "pending:tasks"

    def __init__(self, client: redis.Redis, grace: float) -> None:
        self.redis = client
        self.grace = grace

    def register(self, pipe, member: str, task: str, args: list, due: float | None = None):
        """Add to ``pipe``: ``member`` runs ``task(*args)``, overdue ``grace`` after ``due``."""
        pipe.zadd(self.ZSET, {member: (due or time.time()) + self.grace})
        pipe.hset(self.TASKS, member, dumps({"task": task, "args": args}))
        return pipe

    def settle(self, pipe, member: str):
        pipe.zrem(self.ZSET, member)
        pipe.hdel(self.TASKS, member)
        return pipe

    def settle_now(self, member: str) -> None:
        self.settle(self.redis.pipeline(transaction=True), member).execute()

    def overdue(self, limit: int = 500) -> list[tuple[str, dict]]:
        """Overdue members and their tasks, each postponed by ``grace`` (claimed for now)."""
        members = self.redis.zrangebyscore(self.ZSET, 0, time.time(), start=0, num=limit)
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.ZSET, {m: time.time() + self.grace for m in members}, xx=True)
        pipe.hmget(self.TASKS, members)
        specs = pipe.execute()[1]
        return [(m, json.loads(spec)) for m, spec in zip(members, specs, strict=True) if spec]

    def count(self) -> int:
        return int(self.redis.zcard(self.ZSET))


#: KEYS: done, gen, lock, attempt counter; ARGV: expected generation, lock ms, ttl s
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'done', 0} end
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then
  return {'stale', 0}
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return {'busy', 0} end
local n = redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[3])
return {'go', n}
"""


class DeliveryState:
    """Per-delivery bookkeeping that makes redelivered task messages harmless."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.redis = client
        self.ttl = int(ttl)
        self._begin = client.register_script(_BEGIN)

    def begin(self, delivery_id: str, gen: int, hold: float) -> tuple[str, int]:
        """In one round trip: ``("done"|"stale"|"busy", 0)`` when this task message has
        nothing to do, else take the lock for ``hold`` seconds and count the attempt:
        ``("go", attempt number)``."""
        keys = [self._key(delivery_id, part) for part in ("done", "gen", "lock", "n")]
        verdict, number = self._begin(keys=keys, args=[gen, int(hold * 1000), self.ttl])
        return (verdict.decode() if isinstance(verdict, bytes) else verdict), int(number)

    def finish_delivered(
        self, delivery_id: str, event_id: str, attempt: dict, entries: list[dict]
    ) -> None:
        """In one transaction: log the attempt, append ``entries`` to the event's history,
        mark the delivery done, settle it in the pending outbox and drop its lock."""
        pipe = self.redis.pipeline(transaction=True)
        log_key, history = self._key(delivery_id, "log"), PREFIX + "history:" + event_id
        pipe.rpush(log_key, dumps(attempt)).expire(log_key, self.ttl)
        for entry in entries:
            pipe.rpush(history, dumps({"at": utc_now_iso(), **entry}))
        pipe.expire(history, self.ttl)
        pipe.set(self._key(delivery_id, "done"), "1", ex=self.ttl)
        pipe.zrem(Pending.ZSET, "deliver:" + delivery_id).hdel(
            Pending.TASKS, "deliver:" + delivery_id
        )
        pipe.delete(self._key(delivery_id, "lock"))
        pipe.execute()

    def _key(self, delivery_id: str, part: str) -> str:
        return f"{PREFIX}dlv:{delivery_id}:{part}"

    def mark_done(self, delivery_id: str) -> None:
        self.redis.set(self._key(delivery_id, "done"), "1", ex=self.ttl)

    def next_generation(self, delivery_id: str) -> int:
        key = self._key(delivery_id, "gen")
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, self.ttl)
        return int(pipe.execute()[0])

    def release(self, delivery_id: str) -> None:
        self.redis.delete(self._key(delivery_id, "lock"))

    def log_attempt(self, delivery_id: str, attempt: dict) -> None:
        key = self._key(delivery_id, "log")
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, dumps(attempt))
        pipe.expire(key, self.ttl)
        pipe.execute()

    def attempts(self, delivery_id: str) -> list[dict]:
        items = self.redis.lrange(self._key(delivery_id, "log"), 0, -1)
        return [json.loads(item) for item in items]

    def reset_budget(self, delivery_id: str) -> int:
        """A fresh retry budget (for a replay); returns the new generation."""
        self.redis.delete(self._key(delivery_id, "n"), self._key(delivery_id, "done"))
        return self.next_generation(delivery_id)


class DeadLetters:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, record: dict) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(f"{PREFIX}dead:{record['id']}", dumps(record))
        pipe.zadd(f"{PREFIX}dead", {record["id"]: time.time()})
        pipe.execute()

    def get(self, delivery_id: str) -> dict | None:
        raw = self.redis.get(f"{PREFIX}dead:{delivery_id}")
        return json.loads(raw) if raw else None

    def ids(self) -> list[str]:
        return list(self.redis.zrange(f"{PREFIX}dead", 0, -1))

    def remove(self, delivery_id: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(f"{PREFIX}dead:{delivery_id}")
        pipe.zrem(f"{PREFIX}dead", delivery_id)
        return bool(pipe.execute()[0])

    # -- operator tools (relay.ops.admin) ---------------------------------------------------------

    def scored(self) -> list[tuple[str, float]]:
        """Every dead-letter id with the time it was stored (epoch seconds), oldest first."""
        return [
            (did, float(score))
            for did, score in self.redis.zrange(f"{PREFIX}dead", 0, -1, withscores=True)
        ]

    def get_many(self, delivery_ids: Sequence[str]) -> list[dict | None]:
        """The records of ``delivery_ids``, in order; None where one is gone."""
        records: list[dict | None] = []
        for start in range(0, len(delivery_ids), _BATCH):
            batch = delivery_ids[start : start + _BATCH]
            raws = self.redis.mget([f"{PREFIX}dead:{did}" for did in batch])
            records.extend(json.loads(raw) if raw else None for raw in raws)
        return records

    def stored_at(self, delivery_id: str) -> float | None:
        """When the dead letter was stored (epoch seconds), or None."""
        score = self.redis.zscore(f"{PREFIX}dead", delivery_id)
        return None if score is None else float(score)

    def remove_if_unchanged(self, record: dict) -> bool:
        """Remove the dead letter only while it is still exactly ``record``.

        A replayed delivery can fail again and be dead-lettered anew before the replay
        removes the old record; the new one must survive.
        """
        key = f"{PREFIX}dead:{record['id']}"
        return bool(
            self.redis.eval(
                _REMOVE_IF_UNCHANGED, 2, key, f"{PREFIX}dead", dumps(record), record["id"]
            )
        )

    def purge(self, before: float | None = None) -> int:
        """Remove dead letters stored before ``before`` (epoch seconds; None: all); the count.

        Works in batches, each atomic, so that a huge purge never blocks Redis for long.
        """
        bound = "+inf" if before is None else f"({before!r}"
        removed = 0
        while True:
            count = int(
                self.redis.eval(_PURGE, 1, f"{PREFIX}dead", bound, _BATCH, f"{PREFIX}dead:")
            )
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


def eviction_warning(client: redis.Redis) -> str | None:
    """A warning when this Redis may evict keys (events could vanish), else None."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.ResponseError:
        return None  # CONFIG is disabled (managed Redis): nothing to tell
    if policy and policy != "noeviction":
        return (
            f"Redis maxmemory-policy is {policy!r}: keys (queued events, history, dead "
            "letters) may be evicted; set it to 'noeviction'"
        )
    return None
