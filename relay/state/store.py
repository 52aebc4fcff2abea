"""The state store: the one object through which relay reads and writes Redis.

:func:`open_store` builds it from the settings (the web, the worker and the commands
alike). Its parts: the inbox of accepted events, each event's record and history, the
pending outbox (:mod:`relay.state.pending`), per-delivery state
(:mod:`relay.state.deliveries`), dead letters (:mod:`relay.state.dead_letters`),
auto-reply state (:mod:`relay.state.replies`) and destination controls
(:mod:`relay.state.controls`). Every key is listed in
:mod:`relay.state.keys`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import redis

from relay.events import (
    DeadLetter,
    Event,
    HistoryEntry,
    Job,
    Step,
    dead_letter,
    delivery_entry,
    history_entry,
    new_job,
    routing_dead_letter,
    routing_mark,
)
from relay.settings import Settings
from relay.state import keys, lifecycle, ordering, pending
from relay.state.alerts import AlertState
from relay.state.client import (
    check,
    confirmed,
    dumps,
    eviction_warning,
    loads,
    replicas_online,
    server_id,
    texts,
    unavailable_on_error,
    wait_for_replicas,
)
from relay.state.connection import check_service, connect
from relay.state.controls import Controls
from relay.state.dead_letters import DeadLetters
from relay.state.deliveries import DeliveryState
from relay.state.in_force import RulesInForce
from relay.state.index import DEAD, OPEN, EventIndex, accept_score, event_facets
from relay.state.lifecycle import Lifecycle, Outcome, outcome, receipt_args
from relay.state.ordering import Ordering, woken_jobs
from relay.state.pending import Pending, Spec
from relay.state.replies import ReplyState

log = logging.getLogger("relay.state")

#: KEYS: pending zset, pending hash, inbox, sequence, then one dedupe key per event;
#: ARGV: dedupe ttl (ms), arrival sets' ttl (s), then per event: id, pending due score,
#: pending task JSON, n, its n arrival sets (relay.state.ordering: it takes a number)
_ACCEPT = """
local out = {}
local j = 3
for i = 5, #KEYS do
  local id, n = ARGV[j], tonumber(ARGV[j + 3])
  if redis.call('SET', KEYS[i], id, 'NX', 'PX', ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[j + 1], 'route:' .. id)
    redis.call('HSET', KEYS[2], 'route:' .. id, ARGV[j + 2])
    redis.call('LPUSH', KEYS[3], id)
    if n > 0 then
      local seq = redis.call('INCR', KEYS[4])
      for k = j + 4, j + 3 + n do
        redis.call('ZADD', ARGV[k], seq, id)
        redis.call('EXPIRE', ARGV[k], ARGV[2])
      end
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  j = j + 4 + n
end
return out
"""

#: KEYS: inbox, pending hash, owned set of the node (the inbox again: no node);
#: ARGV: how many more to pop, then ids popped already. Returns id, routing task, id, …
_TAKE = """
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
if tonumber(ARGV[1]) > 0 then
  local more = redis.call('RPOP', KEYS[1], ARGV[1])
  if more then for _, id in ipairs(more) do ids[#ids + 1] = id end end
end
local out = {}
for _, id in ipairs(ids) do
  local spec = redis.call('HGET', KEYS[2], 'route:' .. id)
  if spec then
    if KEYS[3] ~= KEYS[1] then redis.call('SADD', KEYS[3], 'route:' .. id) end
    out[#out + 1] = id
    out[#out + 1] = spec
  end
end
return out
"""

# Keys are derived inside the script from the prefix (one Redis, not a cluster).
# ARGV: prefix, event id, ttl s, now, owned set ('' for none), pending due, event JSON,
#   n entries, entries…, n refs, refs…, accept score (ms), oldest score kept, search state,
#   n index sets, their keys…, routes JSON, destinations JSON, n arrival sets, their keys…,
#   n jobs, then per job: id, task JSON, lock ms, destination, ordered_by field ('' for
#   none), key hash; then the receipt's lifecycle arguments (relay.state.lifecycle).
# The search indexes (relay.state.index) are written here, in the worker's one call per
# event, so that accepting an event costs nothing more; so is an ordered delivery's place
# in its key's queue (relay.state.ordering).
# Returns {-1, woken…} when the event was routed already (a duplicate), else what the
# receipt did to its message and its first own time (relay.state.lifecycle), per job the
# number of the attempt it may start now (0: its lock is held elsewhere; -2: not its
# key's turn, parked), then the deliveries woken (member, task, …) to publish.
_ROUTE = (
    ordering.LIBRARY
    + pending.LIBRARY
    + lifecycle.LIBRARY
    + """
local p, id, ttl, now, owned, due = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local member = 'route:' .. id
pending_settle(p, member)
if owned ~= '' then redis.call('SREM', owned, member) end
if not redis.call('SET', p .. 'routed:' .. id, '1', 'NX', 'EX', ttl) then
  local out = {-1}
  o_routed(p, id, owned, due, out)
  return out
end
redis.call('SET', p .. 'event:' .. id, ARGV[7], 'EX', ttl)
local i = 9
local history = p .. 'history:' .. id
for _ = 1, tonumber(ARGV[8]) do
  redis.call('RPUSH', history, ARGV[i]); i = i + 1
end
redis.call('EXPIRE', history, ttl)
local refs = tonumber(ARGV[i]); i = i + 1
for _ = 1, refs do
  local key = p .. 'ref:' .. ARGV[i]; i = i + 1
  redis.call('ZADD', key, 'NX', now, id)
  redis.call('EXPIRE', key, ttl)
end
local score, cutoff, state = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
local indexes = tonumber(ARGV[i]); i = i + 1
for _ = 1, indexes do
  local key = ARGV[i]; i = i + 1
  redis.call('ZADD', key, score, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cutoff)
  redis.call('EXPIRE', key, ttl)
end
local track = p .. 'track:' .. id
local was = redis.call('HGET', track, '@state')
if was and was ~= state then redis.call('ZREM', p .. 'idx:state:' .. was, id) end
redis.call('HDEL', track, id .. ':(routing)')
redis.call('HSET', track, '@at', score, '@state', state, '@routes', ARGV[i], '@destinations',
  ARGV[i + 1])
redis.call('EXPIRE', track, ttl)
i = i + 2
local arrived = {}
for _ = 1, tonumber(ARGV[i]) do arrived[#arrived + 1] = ARGV[i + 1]; i = i + 1 end
i = i + 1
local jobs = {}
for j = 1, tonumber(ARGV[i]) do
  local did, spec, by = ARGV[i + 1], ARGV[i + 2], ARGV[i + 5]
  local job = 'deliver:' .. did
  redis.call('HSET', track, did, 'open')
  pending_add(p, job, due, spec, ARGV[i + 4])
  local ref = false
  if by ~= '' then
    ref = {ARGV[i + 4], by, ARGV[i + 6]}
    o_enter(p, ref, did, id)
  end
  jobs[j] = {did, ARGV[i + 3], ref}
  i = i + 6
end
for _, key in ipairs(arrived) do redis.call('ZREM', key, id) end
local out, woken = l_receipt(p, ARGV, i + 1), {}
for _, item in ipairs(jobs) do
  local did, hold, ref = item[1], item[2], item[3]
  local first, waits = did, ''
  if ref then first, waits = o_turn(p, ref) end
  local n = 0
  if first ~= did or waits ~= '' then
    o_park(p, ref, did, owned)
    if first ~= did then o_wake(p, ref, owned, due, woken) end
    n = -2
  else
    if owned ~= '' then redis.call('SADD', owned, 'deliver:' .. did) end
    if redis.call('SET', p .. 'dlv:' .. did .. ':lock', '1', 'NX', 'PX', hold) then
      n = redis.call('INCR', p .. 'dlv:' .. did .. ':n')
      redis.call('EXPIRE', p .. 'dlv:' .. did .. ':n', ttl)
    end
  end
  out[#out + 1] = n
end
o_routed(p, id, owned, due, woken)
for _, item in ipairs(woken) do out[#out + 1] = item end
return out
"""
)

#: a job's number in what the routing call returns when it is not its key's turn
PARKED = -2


class Routed(NamedTuple):
    """What a routing call did: each job's attempt number (0: its lock is held elsewhere,
    :data:`PARKED`: not its key's turn), None when the event was routed already; the
    ordered deliveries it woke, to publish; and what a receipt did to its message's
    lifecycle."""

    numbers: list[int] | None
    woken: list[Job]
    lifecycle: Outcome = Outcome()


class Store:
    def __init__(
        self,
        client: redis.Redis,
        history_ttl: float,
        dedupe_ttl: float,
        grace: float = 600.0,
        node: str | None = None,
        dead_letter_ttl: float = 30 * 86400.0,
        dead_letter_max: int = 100_000,
        min_replicas: int = 0,
        replica_timeout: float = 0.5,
    ) -> None:
        self.alerts = AlertState(client, node)
        self.lifecycle = Lifecycle(client, node, history_ttl)
        self.client = client
        self.min_replicas = min_replicas  #: replicas that must confirm what must not vanish
        self.replica_timeout = replica_timeout
        self.history_ttl = int(history_ttl)
        self.dedupe_ttl_ms = int(dedupe_ttl * 1000)
        self.pending = Pending(client, grace, node)
        self.dead_letters = DeadLetters(client, dead_letter_ttl, dead_letter_max)
        self.index = EventIndex(client, history_ttl)
        self.ordering = Ordering(client, self.pending, history_ttl)
        self.deliveries = DeliveryState(
            client, history_ttl, self.pending, self.dead_letters, self.index, self.ordering
        )
        self.replies = ReplyState(client)
        self.controls = Controls(client, history_ttl)
        self.rules_in_force = RulesInForce(client)
        self._accept = client.register_script(_ACCEPT)
        self._take = client.register_script(_TAKE)
        self._route = client.register_script(_ROUTE)

    # -- health ---------------------------------------------------------------------------

    def check(self) -> str:
        """``ok``, or why not."""
        return check(self.client)

    def replication_check(self) -> str:
        """``ok`` when the primary has the replicas an accept needs (always, without
        ``RELAY_REDIS_MIN_REPLICAS``), else how many it has."""
        if not self.min_replicas:
            return "ok"
        try:
            online = replicas_online(self.client)
        except redis.RedisError as exc:
            return f"error: {exc}"
        if online < self.min_replicas:
            return f"{online} of {self.min_replicas} replica(s) in sync"
        return "ok"

    def server_id(self) -> str:
        """The run id of the Redis answering now (another one after a failover)."""
        return server_id(self.client)

    def confirm_replicated(self) -> None:
        """Return once ``min_replicas`` replicas hold every write made before this call
        (by any connection of this process: replication is one ordered stream, so a
        fence written now and confirmed by WAIT covers them), else UnavailableError.
        For operators' writes that must not vanish in a failover; nothing without
        ``RELAY_REDIS_MIN_REPLICAS``."""
        if not self.min_replicas:
            return
        with unavailable_on_error():
            pipe = self.client.pipeline(transaction=False)
            pipe.set(keys.FENCE, str(time.time()), px=60_000)
            wait_for_replicas(pipe, self.min_replicas, self.replica_timeout)
            acknowledged = pipe.execute()[-1]
        confirmed(acknowledged, self.min_replicas, self.replica_timeout)

    def memory_warning(self, share: float = 0.8) -> str | None:
        """A warning when Redis uses more than ``share`` of its ``maxmemory`` (with
        ``noeviction``, a full Redis refuses every write: ingest answers 503)."""
        try:
            memory = self.client.info("memory")
        except redis.RedisError:
            return None  # reported by check()
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        if limit and used > share * limit:
            return (
                f"Redis uses {used / limit:.0%} of its maxmemory: when it is full, callbacks "
                "are refused (503); purge or shorten retention (RELAY_DEAD_LETTER_TTL)"
            )
        return None

    def eviction_warning(self) -> str | None:
        try:
            return eviction_warning(self.client)
        except redis.RedisError:
            return None  # reported by check()

    # -- the inbox ------------------------------------------------------------------------

    def accept(
        self,
        fingerprints: Sequence[str],
        events: Sequence[Event],
        orders: Sequence[Sequence[tuple[str, str]]] = (),
        trace: Mapping[str, str] | None = None,
    ) -> list[bool]:
        """Per event, atomically, in one round trip: claim its fingerprint for the dedupe
        window, store its routing task as pending and put its id in the inbox; with
        ``orders`` (per event, the ``(field, value)`` keys destinations are ordered by),
        give it the next accept number in each key's arrivals. With ``trace`` (the
        request's W3C trace context), the routing task carries it as its second argument.
        False = a duplicate (nothing written). Once this returns, the event is as durable
        as Redis.
        """
        ks = [keys.PENDING, keys.PENDING_TASKS, keys.INBOX, keys.SEQ]
        ks += map(keys.dedupe, fingerprints)
        due = time.time() + self.pending.grace
        args: list[Any] = [self.dedupe_ttl_ms, self.history_ttl]
        for index, event in enumerate(events):
            arrivals = self.ordering.arrival_keys(orders[index] if index < len(orders) else ())
            task = [event, trace] if trace else [event]
            args += [event["id"], due, dumps({"task": "relay.route", "args": task})]
            args += [len(arrivals), *arrivals]
        with unavailable_on_error():
            if not self.min_replicas:
                return [bool(ok) for ok in self._accept(keys=ks, args=args)]
            stored, acknowledged = self._accept_replicated(ks, args)
        confirmed(acknowledged, self.min_replicas, self.replica_timeout)
        return [bool(ok) for ok in stored]

    def _accept_replicated(self, ks: list[str], args: list[Any]) -> tuple[Any, Any]:
        """The accept call and WAIT in one round trip, on one connection (WAIT counts the
        writes of its own connection). A server without the script (a new primary) says
        NOSCRIPT without running anything: it is loaded and the pair sent again."""
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(self._accept.sha, len(ks), *ks, *args)
            wait_for_replicas(pipe, self.min_replicas, self.replica_timeout)
            stored, acknowledged = pipe.execute(raise_on_error=False)
            if not isinstance(stored, redis.exceptions.NoScriptError):
                break
            self.client.script_load(_ACCEPT)
        for reply in (stored, acknowledged):
            if isinstance(reply, Exception):
                raise reply
        return stored, acknowledged

    def take(self, count: int, timeout: float) -> list[Spec]:
        """Up to ``count`` accepted events' routing tasks, oldest first, held by this node
        from now on; waits up to ``timeout`` seconds for the first.

        The wait takes nothing (the oldest id is moved onto its own place: BLMOVE from the
        inbox to itself), so an id only ever leaves the inbox in the call that makes it
        this node's: a worker killed in between loses no event (a BRPOP would have taken
        it, held by no node, until the sweeper found it overdue: ``grace`` later, and the
        later events of its ordered keys with it)."""
        node = self.pending.node
        ks = [keys.INBOX, keys.PENDING_TASKS, keys.owned(node) if node else keys.INBOX]
        specs = self._take(keys=ks, args=[count])
        if not specs:
            wait: Any = timeout  # Redis takes seconds with decimals; redis-py says int
            if self.client.blmove(keys.INBOX, keys.INBOX, wait, "RIGHT", "RIGHT") is None:
                return []
            specs = self._take(keys=ks, args=[count])
        pairs = zip(specs[::2], specs[1::2], strict=True)
        return [spec for spec in (self._decode(i, raw) for i, raw in pairs) if spec is not None]

    def _decode(self, event_id: str, raw: str) -> Spec | None:
        """A stored routing task, or None for one that does not decode: it must not hold
        up the events taken with it, and this node gives it up to the pending outbox."""
        try:
            spec: Spec = loads(raw)
            return spec
        except (ValueError, RecursionError) as exc:
            log.error("the routing task of event %s does not decode: %s", event_id, exc)
            self.pending.disown(keys.route_member(event_id))
            return None

    def inbox_size(self) -> int:
        return int(self.client.llen(keys.INBOX))

    # -- routing --------------------------------------------------------------------------

    def route(
        self,
        event: Event,
        entries: Sequence[HistoryEntry],
        jobs: Sequence[Job],
        holds: Sequence[float],
    ) -> list[int] | None:
        """:meth:`route_in_turn`'s attempt numbers."""
        return self.route_in_turn(event, entries, jobs, holds).numbers

    def route_in_turn(
        self,
        event: Event,
        entries: Sequence[HistoryEntry],
        jobs: Sequence[Job],
        holds: Sequence[float],
        arrivals: Sequence[tuple[str, str]] = (),
        within: float | None = None,
    ) -> Routed:
        """In one round trip: settle the event's routing, store it with its history
        ``entries``, register ``jobs`` as pending deliveries held by this node and start
        their first attempts (lock held ``holds[i]`` seconds) — an ordered job only in its
        key's turn (else parked); the event leaves the ``arrivals`` (``(field, value)``
        keys it was accepted with), and the ordered deliveries whose turn that makes are
        woken (relay.state.ordering). With ``within`` (the rules' final_receipt_within),
        a receipt opens, updates or closes its message's lifecycle (relay.state.lifecycle)."""
        args = self._route_args(event, entries, jobs, holds, arrivals, within)
        reply = self._route(keys=[], args=args)
        if reply and reply[0] == -1:
            return Routed(None, woken_jobs(reply[1:]))
        numbers = [int(n) for n in reply[2 : 2 + len(jobs)]]
        return Routed(numbers, woken_jobs(reply[2 + len(jobs) :]), outcome(reply[:2]))

    def route_batch(
        self,
        batch: Sequence[tuple[Event, Sequence[HistoryEntry], Sequence[Job], Sequence[float]]],
    ) -> list[list[int] | None]:
        """:meth:`route` for many events in one round trip (a pipeline of routing calls,
        each still atomic): for loading history in bulk, e.g. the search benchmark."""
        pipe = self.client.pipeline(transaction=False)
        for event, entries, jobs, holds in batch:
            self._route(keys=[], args=self._route_args(event, entries, jobs, holds), client=pipe)
        return [
            None if reply and reply[0] == -1 else [int(n) for n in reply[2 : 2 + len(item[2])]]
            for reply, item in zip(pipe.execute(), batch, strict=True)
        ]

    def _route_args(
        self,
        event: Event,
        entries: Sequence[HistoryEntry],
        jobs: Sequence[Job],
        holds: Sequence[float],
        arrivals: Sequence[tuple[str, str]] = (),
        within: float | None = None,
    ) -> list[Any]:
        node = self.pending.node
        args: list[Any] = [
            keys.PREFIX,
            event["id"],
            self.history_ttl,
            time.time(),
            keys.owned(node) if node else "",
            time.time() + self.pending.grace,
            dumps(event),
            len(entries),
            *(dumps(entry) for entry in entries),
        ]
        refs = _refs(event)
        args += [len(refs), *refs]
        args += self._index_args(event, entries, jobs)
        sets = self.ordering.arrival_keys(arrivals)
        args += [len(sets), *sets, len(jobs)]
        for job, hold in zip(jobs, holds, strict=True):
            spec = dumps({"task": "relay.deliver", "args": [job]})
            order = job.get("order")
            args += [job["delivery_id"], spec, max(int(hold * 1000), 1), job["destination"]]
            args += [order["by"], order["key"]] if order else ["", ""]
        return args + receipt_args(event, within, self.history_ttl)

    def _index_args(
        self, event: Event, entries: Sequence[HistoryEntry], jobs: Sequence[Job]
    ) -> list[Any]:
        """The search part of the routing call's arguments (see _ROUTE)."""
        routed = next((e for e in entries if e.get("step") == Step.ROUTED), HistoryEntry())
        routes = list(routed.get("routes", []))
        destinations = [job["destination"] for job in jobs]
        state = "pending" if jobs else "unrouted"
        sets = [
            keys.INDEX_ALL,
            keys.index("state", state),
            *(keys.index(f, v) for f, v in event_facets(event, routes, destinations)),
        ]
        now = time.time()
        return [
            accept_score(event),
            self.index.cutoff(now),
            state,
            len(sets),
            *sets,
            dumps(routes),
            dumps(list(dict.fromkeys(destinations))),
        ]

    def next_routing(self, event_id: str) -> int:
        """The number of a new routing of the event (2 for its first re-route)."""
        return int(self.client.hincrby(keys.track(event_id), "@routings", 1)) + 1

    def reroute(self, event: Event, entry: HistoryEntry, jobs: Sequence[Job]) -> None:
        """Register a new routing of the stored ``event`` in one transaction: its ``jobs``
        pending in the outbox (due now: the sweeper publishes any the caller fails to),
        the ``entry`` (``rerouted``) in its history, and its search indexes (the new
        routes and destinations; its state ``pending`` while any job is open)."""
        event_id, now = event["id"], time.time()
        track = self.index.tracks([event_id])[0]
        routes = _union(track.get("@routes"), entry.get("routes", []))
        destinations = _union(track.get("@destinations"), [j["destination"] for j in jobs])
        score = accept_score(event)
        pipe = self.client.pipeline(transaction=True)
        for job in jobs:
            member = keys.deliver_member(job["delivery_id"])
            self.pending.register(pipe, member, "relay.deliver", [job], due=now)
        self._append(pipe, event_id, [entry])
        facets = event_facets(event, entry.get("routes", []), [j["destination"] for j in jobs])
        for key in (keys.INDEX_ALL, *(keys.index(f, v) for f, v in facets)):
            self._index_add(pipe, key, event_id, score, now)
        pipe.hset(
            keys.track(event_id),
            mapping={
                "@at": score,
                "@routes": dumps(routes),
                "@destinations": dumps(destinations),
            },
        )
        self.index.settle(pipe, event_id, {job["delivery_id"]: OPEN for job in jobs}, now)
        pipe.execute()

    def routing_failed(
        self, event: Event, entries: Sequence[HistoryEntry], record: DeadLetter
    ) -> list[Job]:
        """Routing raised (a bug): store the event, its history and a dead letter that a
        replay routes again; settle the routing. Returns the ordered deliveries that
        waited for its routing and may go now, to publish."""
        event_id = event["id"]
        pipe = self.client.pipeline(transaction=True)
        self.pending.settle(pipe, keys.route_member(event_id))
        pipe.set(keys.event(event_id), dumps(event), ex=self.history_ttl)
        self._append(pipe, event_id, entries)
        for ref in _refs(event):
            pipe.zadd(keys.ref(ref), {event_id: time.time()}, nx=True)
            pipe.expire(keys.ref(ref), self.history_ttl)
        self._index_failed_routing(pipe, event, record["id"])
        self.dead_letters.stage(pipe, record)
        self.ordering.routed(pipe, event_id)
        woken = woken_jobs(pipe.execute()[-1])
        self.dead_letters.trim()
        return woken

    def _index_failed_routing(self, pipe: Any, event: Event, routing_id: str) -> None:
        """Add to ``pipe``: index the event, its routing dead (state ``dead``)."""
        score, now = accept_score(event), time.time()
        for facet, value in event_facets(event, (), ()):
            self._index_add(pipe, keys.index(facet, value), event["id"], score, now)
        self._index_add(pipe, keys.INDEX_ALL, event["id"], score, now)
        pipe.hset(keys.track(event["id"]), mapping={"@at": score})
        self.index.settle(pipe, event["id"], {routing_id: DEAD}, now)

    def _index_add(self, pipe: Any, key: str, event_id: str, score: int, now: float) -> None:
        """Add to ``pipe``: the event in the search set ``key``, which drops the entries
        history no longer keeps and expires a history TTL after this write (as the
        routing call does)."""
        pipe.zadd(key, {event_id: score})
        pipe.zremrangebyscore(key, "-inf", f"({self.index.cutoff(now)}")
        pipe.expire(key, self.history_ttl)

    def poisoned(self, member: str, spec: Spec | None, reason: str) -> list[Job]:
        """Move the unit of work ``member`` (its task ``spec``, None when it does not decode)
        to the dead letters with ``reason``, visible in the event's history, and settle it:
        it is never published again. Returns the ordered deliveries that may go now."""
        kind, _, ref = member.partition(":")
        if kind == "route":
            event: Event = spec["args"][0] if spec else {"id": ref}
            entries = [
                history_entry(Step.RECEIVED, rules_version=""),
                history_entry(Step.DEAD_LETTERED, reason=reason),
            ]
            return self.routing_failed(event, entries, routing_dead_letter(event, "", reason))
        event_id, _, target = ref.partition(":")
        destination, routing = routing_mark(target)
        job: Job = (
            spec["args"][0]
            if spec
            else new_job(
                {"id": event_id},
                None,
                destination,
                "",
                {"attempts": 0, "initial": 0.0, "max": 0.0},
                routing=routing,
            )
        )
        record = dead_letter(job, reason, self.deliveries.attempts(job["delivery_id"]))
        entries = [delivery_entry(job, Step.DEAD_LETTERED, reason=reason)]
        return self.deliveries.dead(job, record, entries).woken

    def remove_dead_letter(
        self, delivery_id: str, destination: str | None
    ) -> tuple[bool, list[Job]]:
        """Remove a dead letter and, in the same transaction, release the key it holds (a
        delivery to ``destination`` with ``on_failure: block``; also when the dead letter
        itself is gone already): whether it was there, and the ordered delivery woken."""
        if destination is None:
            return self.dead_letters.remove(delivery_id), []
        pipe = self.client.pipeline(transaction=True)
        self.dead_letters.remove(delivery_id, client=pipe)
        self.ordering.unblock(destination, delivery_id, client=pipe)
        found, woken = pipe.execute()
        return bool(found), woken_jobs(woken)

    def live_task(self, spec: Spec) -> Spec:
        """A pending task as it must be published again: a delivery's job at the live
        generation. The pending entry lags behind it when the write that registered the
        next generation was lost in a failover (the generation is counted first): a copy
        of the old one would be dropped as stale, and the live one may be gone."""
        if spec.get("task") != "relay.deliver":
            return spec
        job: Job = spec["args"][0]
        live = self.deliveries.generation(job["delivery_id"])
        if live <= int(job.get("gen", 0)):
            return spec
        return {**spec, "args": [{**job, "gen": live}]}

    # -- history --------------------------------------------------------------------------

    def add_history(self, event_id: str, *entries: HistoryEntry) -> None:
        pipe = self.client.pipeline(transaction=True)
        self._append(pipe, event_id, entries)
        pipe.execute()

    def _append(self, pipe: Any, event_id: str, entries: Sequence[HistoryEntry]) -> None:
        if entries:
            key = keys.history(event_id)
            pipe.rpush(key, *(dumps(entry) for entry in entries))
            pipe.expire(key, self.history_ttl)

    def event(self, event_id: str) -> Event | None:
        raw = self.client.get(keys.event(event_id))
        return loads(raw) if raw else None

    def events(self, event_ids: Sequence[str]) -> list[Event | None]:
        """The stored events of ``event_ids`` (None for one no longer kept), in one call."""
        if not event_ids:
            return []
        found = self.client.mget([keys.event(event_id) for event_id in event_ids])
        return [loads(raw) if raw else None for raw in found]

    def history(self, event_id: str) -> list[HistoryEntry]:
        return [loads(item) for item in self.client.lrange(keys.history(event_id), 0, -1)]

    def find(self, ref: str) -> list[str]:
        """Event ids for a relay id, a transid or a tid, oldest first."""
        if self.client.exists(keys.event(ref)):
            return [ref]
        return texts(self.client.zrange(keys.ref(ref), 0, -1))


def _union(stored: str | None, more: Sequence[str]) -> list[str]:
    """The names of a stored JSON list, then those of ``more`` not in it."""
    try:
        known = loads(stored) if stored else []
    except ValueError:
        known = []
    names = [str(name) for name in known] if isinstance(known, list) else []
    return list(dict.fromkeys([*names, *more]))


def _refs(event: Event) -> list[str]:
    return [value for value in (event.get("transid"), event.get("tid")) if value]


def pending_grace(settings: Settings) -> float:
    """How long past its due time an unowned task may stay unsettled before it counts as
    lost: twice the visibility timeout covers a message held unacknowledged and
    redelivered by the broker."""
    return 2 * settings.visibility_timeout


def open_store(settings: Settings, timeout: float, node: str | None = None) -> Store:
    """The store for ``settings``: every process builds its own this way (``node``: this
    worker node's id, for the work it takes). SettingsError when Sentinels answer but do
    not know the service the URL names."""
    check_service(settings.require_redis(), timeout, settings.redis_sentinel_password)
    return Store(
        connect(settings.require_redis(), timeout, settings.redis_sentinel_password),
        settings.history_ttl,
        settings.dedupe_ttl,
        grace=pending_grace(settings),
        node=node,
        dead_letter_ttl=settings.dead_letter_ttl,
        dead_letter_max=settings.dead_letter_max,
        min_replicas=settings.redis_min_replicas,
        replica_timeout=settings.redis_replica_timeout,
    )
