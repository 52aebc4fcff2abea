"""Per-delivery bookkeeping that makes redelivered task messages harmless.

Each attempt starts with :meth:`DeliveryState.begin` (one round trip: done? stale? busy?
else take the lock and count the attempt) and ends with one transaction that writes its
outcome, its history entries and what comes next (settled, a retry, a dead letter), and
moves the event's search state (:mod:`relay.state.index`) in the same transaction; a
delivered attempt's also counts its outcome in the destination's controls
(:class:`relay.state.controls.Settlement`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis

from relay.events import Attempt, DeadLetter, HistoryEntry, Job
from relay.state import keys
from relay.state.client import dumps, loads
from relay.state.controls import Settlement
from relay.state.dead_letters import DeadLetters
from relay.state.index import DEAD, DONE, RETRY, EventIndex
from relay.state.ordering import Ordering, woken_jobs
from relay.state.pending import Pending

#: KEYS: done, gen, lock, attempt counter, owned set (or the counter again);
#: ARGV: expected generation, lock ms, ttl s, member
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'done', 0} end
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then
  return {'stale', 0}
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return {'busy', 0} end
local n = redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[3])
if KEYS[5] ~= KEYS[4] then redis.call('SADD', KEYS[5], ARGV[4]) end
return {'go', n}
"""


class Delivered(NamedTuple):
    """What :meth:`DeliveryState.delivered` did: the ordered deliveries woken, and the
    circuit's transition its controls' settlement made (``''``: none, or no settlement);
    ``counted``: False when that settlement failed (the delivery is recorded all the
    same), with the ``error``."""

    woken: list[Job]
    transition: str = ""
    counted: bool = True
    error: Exception | None = None


class Dead(NamedTuple):
    """What :meth:`DeliveryState.dead` registered: the delivery to the fallback (with its
    generation), and the ordered deliveries woken."""

    fallback: Job | None
    woken: list[Job]


class DeliveryState:
    def __init__(
        self,
        client: redis.Redis,
        ttl: float,
        pending: Pending,
        dead_letters: DeadLetters,
        index: EventIndex,
        ordering: Ordering,
    ) -> None:
        self.redis = client
        self.index = index
        self.ordering = ordering
        self.ttl = int(ttl)
        self.pending = pending
        self.dead_letters = dead_letters
        self._begin = client.register_script(_BEGIN)

    def begin(self, delivery_id: str, gen: int, hold: float) -> tuple[str, int]:
        """``("done"|"stale"|"busy", 0)`` when this task message has nothing to do, else
        take the lock for ``hold`` seconds, count the attempt and hold the delivery as
        this node's: ``("go", attempt number)``."""
        node = self.pending.node
        counter = keys.delivery(delivery_id, "n")
        owned = keys.owned(node) if node else counter
        verdict, number = self._begin(
            keys=[
                keys.delivery(delivery_id, "done"),
                keys.delivery(delivery_id, "gen"),
                keys.delivery(delivery_id, "lock"),
                counter,
                owned,
            ],
            args=[gen, int(hold * 1000), self.ttl, keys.deliver_member(delivery_id)],
        )
        return (verdict.decode() if isinstance(verdict, bytes) else verdict), int(number)

    def delivered(
        self,
        job: Job,
        attempt: Attempt,
        entries: Sequence[HistoryEntry],
        controls: Settlement | None = None,
    ) -> Delivered:
        """In one transaction: count the attempt's outcome in the destination's
        ``controls`` (its lease, statistics, circuit), log the attempt, append ``entries``
        to the event's history, mark the delivery done, settle it and drop its lock; an
        ordered one leaves its key's queue. Returns the ordered deliveries woken (their
        turn now), to publish, and the circuit's transition.

        The controls' script failing inside the transaction (Redis runs the rest of it)
        does not fail the delivery: it is recorded, and the failure returned."""
        pipe = self.redis.pipeline(transaction=True)
        if controls is not None:
            controls.stage(pipe)
        self._log(pipe, job["delivery_id"], attempt)
        self._done(pipe, job, entries)
        if controls is None:
            return Delivered(self._execute(pipe, job))
        if "order" in job:
            self.ordering.settle(pipe, job, False)
        results = pipe.execute(raise_on_error=False)
        for result in results[1:]:
            if isinstance(result, Exception):
                raise result
        woken = woken_jobs(results[-1]) if "order" in job else []
        if isinstance(results[0], Exception):
            return Delivered(woken, "", False, results[0])
        return Delivered(woken, Settlement.transition(results[0]))

    def failed(
        self,
        job: Job,
        attempt: Attempt,
        entries: Sequence[HistoryEntry],
        retry_at: float | None = None,
    ) -> Job | None:
        """In one transaction: log a failed attempt and its history; with ``retry_at``,
        register the follow-up job (a new generation) and return it. The lock stays (the
        caller releases it, or a dead letter does)."""
        did = job["delivery_id"]
        follow_up: Job | None = None
        if retry_at is not None:
            gen = self.next_generation(did)
            follow_up = {**job, "gen": gen, "not_before": retry_at}
        pipe = self.redis.pipeline(transaction=True)
        self._log(pipe, did, attempt)
        self._history(pipe, job, entries)
        if follow_up is not None:
            self.pending.register(
                pipe, keys.deliver_member(did), "relay.deliver", [follow_up], due=retry_at
            )
            self.index.settle(pipe, job["event"]["id"], {did: RETRY}, time.time())
        pipe.delete(keys.delivery(did, "lock"))
        pipe.execute()
        return follow_up

    def skipped(self, job: Job, entries: Sequence[HistoryEntry]) -> list[Job]:
        """The delivery must not go out (an auto-reply's safety rules): done and settled
        (as :meth:`delivered`)."""
        pipe = self.redis.pipeline(transaction=True)
        self._done(pipe, job, entries)
        return self._execute(pipe, job)

    def _execute(self, pipe: Any, job: Job, block: bool = False) -> list[Job]:
        """Run the settlement in ``pipe``, for an ordered ``job`` with its key's turn moved
        on (or, ``block``, held) in the same transaction; the deliveries woken. Without
        ``order``, nothing more: no other command, no other round trip."""
        if "order" not in job:
            pipe.execute()
            return []
        self.ordering.settle(pipe, job, block)
        return woken_jobs(pipe.execute()[-1])

    def _done(self, pipe: Any, job: Job, entries: Sequence[HistoryEntry]) -> None:
        did = job["delivery_id"]
        self._history(pipe, job, entries)
        pipe.set(keys.delivery(did, "done"), "1", ex=self.ttl)
        self.pending.settle(pipe, keys.deliver_member(did))
        pipe.delete(keys.delivery(did, "lock"))
        self.index.settle(pipe, job["event"]["id"], {did: DONE}, time.time())

    def dead(
        self,
        job: Job,
        record: DeadLetter,
        entries: Sequence[HistoryEntry],
        last: Attempt | None = None,
        fallback: Job | None = None,
    ) -> Dead:
        """Log the ``last`` attempt, store the dead letter, write ``entries``, settle the
        delivery and drop its lock, in one transaction. With ``fallback`` (a delivery to the
        destination's fallback), register it in the same transaction, as a fresh delivery
        (a new generation, no attempts counted), and return it with its generation. An
        ordered delivery leaves its key's queue (the next woken, returned), or with
        ``order.block`` stays first and holds its key."""
        did = job["delivery_id"]
        if fallback is not None:
            fallback = {**fallback, "gen": self.reset_budget(fallback["delivery_id"])}
        pipe = self.redis.pipeline(transaction=True)
        if last is not None:
            self._log(pipe, did, last)
        self.dead_letters.stage(pipe, record)
        self._history(pipe, job, entries)
        self.pending.settle(pipe, keys.deliver_member(did))
        if fallback is not None:
            member = keys.deliver_member(fallback["delivery_id"])
            self.pending.register(pipe, member, "relay.deliver", [fallback])
        pipe.delete(keys.delivery(did, "lock"))
        self.index.settle(pipe, job["event"]["id"], {did: DEAD}, time.time())
        woken = self._execute(pipe, job, block="order" in job and job["order"]["block"])
        self.dead_letters.trim()
        return Dead(fallback, woken)

    def postpone(self, delivery_id: str, due: float, parked: bool = False) -> None:
        """The attempt just begun does not run (its destination said wait): uncount it,
        drop its lock, and push its pending due time to ``due`` (when its task message
        comes back), so the sweeper does not take a legitimate wait for a loss.

        ``parked`` (a pause or an open circuit, which may last any time): its poison count
        starts afresh, since a worker handled this copy and put it back; else every
        restart of the workers during a long pause would count toward poison. (Not for a
        short wait: no attempt can run while parked, so no crash can loop through it.)"""
        member = keys.deliver_member(delivery_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.decr(keys.delivery(delivery_id, "n"))
        pipe.delete(keys.delivery(delivery_id, "lock"))
        pipe.zadd(keys.PENDING, {member: due + self.pending.grace}, xx=True)
        if parked:
            pipe.delete(keys.republished(member))
        pipe.execute()

    def release(self, delivery_id: str) -> None:
        self.redis.delete(keys.delivery(delivery_id, "lock"))

    def attempts(self, delivery_id: str) -> list[Attempt]:
        return [loads(item) for item in self.redis.lrange(keys.delivery(delivery_id, "log"), 0, -1)]

    def reset_budget(self, delivery_id: str) -> int:
        """A fresh retry budget (for a replay); returns the new generation."""
        self.redis.delete(keys.delivery(delivery_id, "n"), keys.delivery(delivery_id, "done"))
        return self.next_generation(delivery_id)

    def generation(self, delivery_id: str) -> int:
        """The live generation of the delivery's task messages (0 before any retry)."""
        return int(self.redis.get(keys.delivery(delivery_id, "gen")) or 0)

    def next_generation(self, delivery_id: str) -> int:
        key = keys.delivery(delivery_id, "gen")
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, self.ttl)
        return int(pipe.execute()[0])

    def _log(self, pipe: Any, delivery_id: str, attempt: Attempt) -> None:
        key = keys.delivery(delivery_id, "log")
        pipe.rpush(key, dumps(attempt)).expire(key, self.ttl)

    def _history(self, pipe: Any, job: Job, entries: Sequence[HistoryEntry]) -> None:
        if entries:
            key = keys.history(job["event"]["id"])
            pipe.rpush(key, *(dumps(entry) for entry in entries)).expire(key, self.ttl)
