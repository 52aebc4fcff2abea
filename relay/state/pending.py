"""The pending outbox: every unit of work not yet settled, and which worker holds it.

Every task relay publishes (``relay.route`` for an event, ``relay.deliver`` for a
delivery) is registered here, in the same round trip as the state that created it, and
settled in the same round trip as the state that ends it. Nothing is lost while its
member is here: a sweeper publishes it again when it is overdue.

Who holds a member decides how soon it counts as lost:

- **owned** — a worker node took it (from the inbox, or as a task message it received) and
  put it in its ``relay:owned:<node>`` set. A live node sends a heartbeat every
  :data:`HEARTBEAT` seconds; a node silent for :data:`NODE_TTL` seconds is dead, and its
  members are published again at once (:meth:`Pending.take_over`). A slow but alive
  delivery is never taken over: its node's heartbeat goes on.
- **not owned** — queued in the broker, or lost between the broker and a worker (kombu's
  Redis transport pops a message, then records it as unacknowledged in a second command).
  It is overdue ``grace`` seconds after it was due, and published again only while the
  inbox and the queues are empty: a task waiting in a long queue is late, not lost.

Tasks are idempotent (routed marker, delivery generation, done marker and lock), so a
second copy of one is harmless.

Each destination's backlog (its deliveries pending) is counted as members come and go, in
the same Lua call (:data:`LIBRARY`, which every write of the outbox uses): a delivery's
member is recorded with its destination once, counted once, and uncounted only when that
record goes, so a second registration, a second settlement, a take-over or a transaction
run again after a failover leaves the counts as they were. Reading them is one hash
(:mod:`relay.state.backlog`), whatever the size of the outbox.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from relay.state import backlog, keys
from relay.state.client import dumps, loads, texts

#: seconds between a worker node's heartbeats
HEARTBEAT = 2.0
#: seconds without a heartbeat after which a node is dead and its work is taken over
NODE_TTL = 15.0

#: Lua functions for every script that adds to the outbox or settles a member of it (keys
#: derived from the prefix ``p``: one Redis, not a cluster). ``destination``: a delivery's
#: ('' for a routing), counted in relay:backlog while its member is pending.
LIBRARY = """
local function pending_add(p, member, due, spec, destination)
  redis.call('ZADD', p .. 'pending', due, member)
  redis.call('HSET', p .. 'pending:tasks', member, spec)
  if destination ~= '' and redis.call('HSETNX', p .. 'pending:destinations', member,
      destination) == 1 then
    redis.call('HINCRBY', p .. 'backlog', destination, 1)
  end
end
local function pending_settle(p, member)
  redis.call('ZREM', p .. 'pending', member)
  redis.call('HDEL', p .. 'pending:tasks', member)
  local destination = redis.call('HGET', p .. 'pending:destinations', member)
  if destination then
    redis.call('HDEL', p .. 'pending:destinations', member)
    if redis.call('HINCRBY', p .. 'backlog', destination, -1) <= 0 then
      redis.call('HDEL', p .. 'backlog', destination)
    end
  end
end
"""

#: ARGV: prefix, member, due score, task JSON, destination ('' for none)
_REGISTER = LIBRARY + "pending_add(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])\nreturn 1\n"
#: ARGV: prefix, member
_SETTLE = LIBRARY + "pending_settle(ARGV[1], ARGV[2])\nreturn 1\n"

#: KEYS: owned set of the node, nodes zset, pending zset, pending hash;
#: ARGV: node, new due score, key prefix. Returns member, spec, member, spec, … still
#: pending. The dead node's delivery locks are dropped: nobody is sending under them.
_TAKE_OVER = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local out = {}
for _, member in ipairs(members) do
  local spec = redis.call('HGET', KEYS[4], member)
  if spec then
    redis.call('ZADD', KEYS[3], 'XX', ARGV[2], member)
    if string.sub(member, 1, 8) == 'deliver:' then
      redis.call('DEL', ARGV[3] .. 'dlv:' .. string.sub(member, 9) .. ':lock')
    end
    out[#out + 1] = member
    out[#out + 1] = spec
  end
end
return out
"""

#: KEYS: nodes zset, owned set, pending hash, pending zset; ARGV: node, now, members…
#: A member due never (an ordered delivery parked until its turn: relay.state.ordering)
#: is nobody's, though its task message came here.
_HEARTBEAT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
for i = 3, #ARGV do
  local m = ARGV[i]
  if redis.call('HEXISTS', KEYS[3], m) == 1 and redis.call('ZSCORE', KEYS[4], m) ~= 'inf' then
    redis.call('SADD', KEYS[2], m)
  end
end
return 1
"""

Spec = dict[str, Any]  #: ``{"task": name, "args": [...]}``


class Pending:
    def __init__(self, client: redis.Redis, grace: float, node: str | None = None) -> None:
        self.redis = client
        self.grace = grace
        self.node = node  #: this process's worker node id (None in the web and commands)
        self._take_over = client.register_script(_TAKE_OVER)
        self._heartbeat = client.register_script(_HEARTBEAT)

    # -- registering and settling (added to a caller's pipeline) --------------------------

    def register(
        self,
        pipe: Any,
        member: str,
        task: str,
        args: list[Any],
        due: float | None = None,
        own: bool = False,
    ) -> Any:
        """Add to ``pipe``: ``member`` runs ``task(*args)``, overdue ``grace`` after ``due``;
        ``own``: this node holds it."""
        # EVAL, not EVALSHA: in a transaction, a script the server does not know (a new
        # primary after a failover) would fail alone, after MULTI; redis-py's remedy, a
        # SCRIPT EXISTS before every transaction, would cost a round trip each
        spec = dumps({"task": task, "args": args})
        score = (due or time.time()) + self.grace
        pipe.eval(_REGISTER, 0, keys.PREFIX, member, score, spec, _destination(member, args))
        if own and self.node:
            pipe.sadd(keys.owned(self.node), member)
        return pipe

    def settle(self, pipe: Any, member: str) -> Any:
        pipe.eval(_SETTLE, 0, keys.PREFIX, member)
        if self.node:
            pipe.srem(keys.owned(self.node), member)
        return pipe

    def register_now(self, member: str, task: str, args: list[Any]) -> None:
        self.register(self.redis.pipeline(transaction=True), member, task, args).execute()

    def settle_now(self, member: str) -> None:
        self.settle(self.redis.pipeline(transaction=True), member).execute()

    # -- the same, by event and delivery id -------------------------------------------------

    def register_routing_now(self, event_id: str, args: list[Any]) -> None:
        """The routing of event ``event_id`` runs ``relay.route(*args)``."""
        self.register_now(keys.route_member(event_id), "relay.route", args)

    def register_delivery_now(self, delivery_id: str, args: list[Any]) -> None:
        """The delivery ``delivery_id`` runs ``relay.deliver(*args)``."""
        self.register_now(keys.deliver_member(delivery_id), "relay.deliver", args)

    def settle_routing_now(self, event_id: str) -> None:
        self.settle_now(keys.route_member(event_id))

    def settle_delivery_now(self, delivery_id: str) -> None:
        self.settle_now(keys.deliver_member(delivery_id))

    # -- ownership ------------------------------------------------------------------------

    def heartbeat(self, taken: Iterable[str] = (), now: float | None = None) -> None:
        """This node is alive; it also holds those of ``taken`` (members of task messages
        it received since the last beat) that are still pending."""
        assert self.node, "only a worker node has a heartbeat"
        self._heartbeat(
            keys=[keys.NODES, keys.owned(self.node), keys.PENDING_TASKS, keys.PENDING],
            args=[self.node, time.time() if now is None else now, *taken],
        )

    def own(self, member: str) -> None:
        """This node holds ``member`` (a task it could not publish: published again from
        here, see ``relay.worker.failover``)."""
        if self.node:
            self.redis.sadd(keys.owned(self.node), member)

    def disown(self, member: str) -> None:
        """This node gives ``member`` up: it is overdue ``grace`` after it was due."""
        if self.node:
            self.redis.srem(keys.owned(self.node), member)

    def disown_routing(self, event_id: str) -> None:
        """:meth:`disown` the routing of event ``event_id``."""
        self.disown(keys.route_member(event_id))

    def owned(self) -> list[tuple[str, Spec | None]]:
        """The members this node holds that are still pending, with their tasks (members
        settled meanwhile are dropped from its set)."""
        if not self.node:
            return []
        owned = keys.owned(self.node)
        members = texts(self.redis.smembers(owned))
        if not members:
            return []
        found = self.redis.hmget(keys.PENDING_TASKS, members)
        specs = [None if spec is None else str(spec) for spec in found]  # decoded replies
        settled = [m for m, spec in zip(members, specs, strict=True) if spec is None]
        if settled:
            self.redis.srem(owned, *settled)
        return [(m, _decoded(spec)) for m, spec in zip(members, specs, strict=True) if spec]

    def leave(self) -> None:
        """This node stops cleanly: what it still holds is taken over at once."""
        if self.node:
            self.redis.zadd(keys.NODES, {self.node: 0})

    def beats(self, host: str) -> dict[str, float]:
        """The worker nodes of ``host`` with the time of their last heartbeat (0 for one
        that stopped cleanly), for a liveness probe on that host."""
        found: Any = self.redis.zrange(keys.NODES, 0, -1, withscores=True)
        nodes = texts(member for member, _ in found)
        scores = (float(score) for _, score in found)
        return {n: s for n, s in zip(nodes, scores, strict=True) if n.startswith(f"{host}:")}

    def dead_nodes(self, now: float | None = None, everyone_else: bool = False) -> list[str]:
        """Nodes silent for NODE_TTL seconds (``everyone_else``: every node but this one,
        for a worker that knows it is the only one)."""
        if everyone_else:
            return [n for n in texts(self.redis.zrange(keys.NODES, 0, -1)) if n != self.node]
        bound = (time.time() if now is None else now) - NODE_TTL
        nodes = texts(self.redis.zrangebyscore(keys.NODES, 0, bound))
        return [n for n in nodes if n != self.node]

    def liveness(self, now: float | None = None) -> tuple[int, float | None]:
        """For the metrics: how many worker nodes beat within NODE_TTL seconds, and the time
        of the freshest heartbeat (None when no node has one: none ever started, or each
        stopped cleanly)."""
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcount(keys.NODES, f"({now - NODE_TTL}", "+inf")  # not dead_nodes()'s
        pipe.zrevrange(keys.NODES, 0, 0, withscores=True)
        live, freshest = pipe.execute()
        beat = float(freshest[0][1]) if freshest else 0.0
        return int(live), beat if beat > 0 else None  # 0: the node left (leave())

    def take_over(self, node: str) -> list[tuple[str, Spec | None]]:
        """The members ``node`` held that are still pending, with their tasks; the node
        is forgotten and its delivery locks dropped. Each member's due time is pushed
        ``grace`` ahead (claimed)."""
        flat = self._take_over(
            keys=[keys.owned(node), keys.NODES, keys.PENDING, keys.PENDING_TASKS],
            args=[node, time.time() + self.grace, keys.PREFIX],
        )
        return [(flat[i], _decoded(flat[i + 1])) for i in range(0, len(flat), 2)]

    # -- the unowned fallback -------------------------------------------------------------

    def overdue(self, limit: int = 500) -> list[tuple[str, Spec | None]]:
        """Overdue members and their tasks, each postponed by ``grace`` (claimed for now)."""
        members = texts(self.redis.zrangebyscore(keys.PENDING, 0, time.time(), start=0, num=limit))
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(keys.PENDING, {m: time.time() + self.grace for m in members}, xx=True)
        pipe.hmget(keys.PENDING_TASKS, members)
        specs = pipe.execute()[1]
        return [(m, _decoded(spec)) for m, spec in zip(members, specs, strict=True) if spec]

    def count(self) -> int:
        return int(self.redis.zcard(keys.PENDING))

    def backlog(self) -> dict[str, int]:
        """Pending deliveries per destination (every delivery not yet settled: waiting,
        queued, parked, in a retry's backoff or under way), read from the counts kept with
        the outbox: one hash, not the outbox."""
        return backlog.counts(self.redis)

    def count_republish(self, member: str, ttl: float) -> int:
        """One more time ``member`` is published again; how many times so far."""
        key = keys.republished(member)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, max(int(ttl), 1))
        return int(pipe.execute()[0])

    def get(self, member: str) -> Spec | None:
        raw = self.redis.hget(keys.PENDING_TASKS, member)
        return loads(raw) if raw else None

    def delivery_task(self, delivery_id: str) -> Spec | None:
        """The task of the delivery ``delivery_id`` while it is pending."""
        return self.get(keys.deliver_member(delivery_id))

    def lock(self, name: str, seconds: float) -> bool:
        """A short lock (one sweeper at a time): True when this caller got it."""
        return bool(self.redis.set(keys.lock(name), "1", nx=True, px=max(int(seconds * 1000), 100)))


def _destination(member: str, args: list[Any]) -> str:
    """The destination a ``deliver:`` member's task names ('' for any other member)."""
    job = args[0] if member.startswith("deliver:") and args else None
    destination = job.get("destination") if isinstance(job, dict) else None
    return destination if isinstance(destination, str) else ""


def _decoded(raw: str) -> Spec | None:
    """A stored task, or None when it does not decode (it is then poison)."""
    try:
        spec: Spec = loads(raw)
        return spec
    except (ValueError, RecursionError):
        return None
