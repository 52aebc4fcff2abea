"""Routing: record an accepted event, match it, and start its deliveries at once.

One round trip records the event, its history and its pending deliveries, settles its
routing and takes the lock of each delivery's first attempt (``Store.route``); the first
attempts then run right here, in the same task or intake thread — unless the destination's
controls say wait (paused, circuit open, throttled, full: :mod:`relay.worker.gate`), when the
attempt is given back uncounted and the delivery published as a task with a countdown. Only
retries, such waits (and work taken over from a dead worker) travel as ``relay.deliver``
task messages.

Should routing fail for a reason that would only repeat — matching raised (a bug), or the
event holds what relay cannot store (UnicodeError, ValueError, TypeError …) — the event
becomes a dead letter with no destination and a reason that starts with ``unroutable``, at
once, which a replay routes again. Only a failure of the state store itself (Redis away,
a timeout, a failover: ``relay.state.is_infrastructure``) is raised, for the caller to
try again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from relay import metrics, tracing
from relay.events import (
    Event,
    HistoryEntry,
    Job,
    Step,
    history_entry,
    new_job,
    routing_dead_letter,
)
from relay.rules import Destination, RouteMatch
from relay.state import RedisError, is_infrastructure
from relay.state.store import PARKED
from relay.text import valid
from relay.worker import deadlines, delivery, ordering, replies
from relay.worker.runtime import Runtime

log = logging.getLogger("relay.deliver")

REDIS_PAUSE = 1.0  #: seconds between tries while Redis does not answer
UNROUTABLE = "unroutable"  #: how the reason of a routing dead letter begins


class _UnroutableError(Exception):
    """Routing failed before it was recorded, for a reason that would only repeat."""

    def __init__(self, version: str, cause: Exception) -> None:
        self.version = version
        self.cause = cause
        super().__init__(f"{UNROUTABLE}: {type(cause).__name__}: {cause}")


@contextmanager
def _unroutable_on_error(version: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        raise _UnroutableError(version, exc) from exc


def route_event(runtime: Runtime, event: Event, trace: dict[str, str] | None = None) -> list[str]:
    """Route ``event`` and run each delivery's first attempt; what each came to. With
    ``trace`` (the context of the request that accepted it), the routing's span continues
    that trace, and each delivery carries the routing's context (``relay.tracing``).

    A routing that fails for a reason that would only repeat is dead-lettered (``[]``);
    a failure of the state store is raised."""
    with tracing.routing(event, trace) as span:
        try:
            return _route(runtime, event, span)
        except _UnroutableError as failure:
            log.error("routing %s failed: %s", event["id"], failure, exc_info=failure.cause)
            _routing_failed(runtime, event, failure.version, str(failure))
            return []


def _route(runtime: Runtime, event: Event, span: tracing.Span) -> list[str]:
    ruleset = runtime.rules.current
    with _unroutable_on_error(ruleset.version):
        replies.before_matching(runtime, event)
        matches = ruleset.match(event)
        jobs = ordering.ordered(
            ruleset,
            [
                new_job(event, match.route, name, ruleset.version, match.retry[name].spec())
                for match in matches
                for name in match.destinations
            ],
        )
        arrivals = ruleset.order_values(event)
    received = history_entry(Step.RECEIVED, rules_version=ruleset.version)
    carried = tracing.context()
    if carried:
        received["traceparent"] = carried["traceparent"]  # what a re-route links to
        for job in jobs:
            job["trace"] = carried
        tracing.routed(
            span,
            [match.route for match in matches],
            [job["destination"] for job in jobs],
            ruleset.version,
        )
    entries = [received, _routed(matches, jobs, ruleset.version)]
    destinations = [ruleset.destinations.get(job["destination"]) for job in jobs]
    within = ruleset.lifecycle.final_receipt_within if ruleset.lifecycle else None
    held = runtime.holdings.holding_deliveries(*(job["delivery_id"] for job in jobs))
    with held, ordering.in_turn(runtime, delivery.deliver_job):
        return _record_and_attempt(
            runtime, event, entries, matches, jobs, destinations, arrivals, within
        )


def _record_and_attempt(
    runtime: Runtime,
    event: Event,
    entries: list[HistoryEntry],
    matches: list[RouteMatch],
    jobs: list[Job],
    destinations: list[Destination | None],
    arrivals: list[tuple[str, str]],
    within: float | None = None,
) -> list[str]:
    """Record the routing and start the deliveries (their members held by this process
    meanwhile: see ``relay.worker.failover``); publish the ordered ones whose turn that
    made (after these). An ordered delivery that is not its key's turn is parked: nothing
    runs it now. With ``within`` (the rules' ``lifecycle``), a receipt also opens, updates
    or closes its message's deadline in the same call."""
    holds = _holds(destinations)
    with _unroutable_on_error(entries[0].get("rules_version", "")):
        numbers, woken, lifecycle = runtime.store.route_in_turn(
            event, entries, jobs, holds, arrivals, within
        )
    ordering.woke(runtime, woken)
    if numbers is None:
        # routed before: by a copy of this event, or by this very call when Redis applied
        # it and the answer was lost. Drive its deliveries on, idempotently (done ones are
        # dropped), so none stays held by this node with nobody working on it.
        log.info("event %s: routed already; its deliveries are checked", event["id"])
        return [_until_redis_answers(runtime, job) for job in jobs]
    _count(matches)
    deadlines.counted(runtime.store, event, lifecycle)
    log.info(
        "routed %s to %s",
        event["id"],
        [job["destination"] for job in jobs] or "nothing",
        extra={
            "event_id": event["id"],
            "step": "routed" if jobs else "unrouted",
            "route": ",".join(match.route for match in matches) or None,
            "rules_version": entries[0].get("rules_version"),
        },
    )
    results = []
    for job, destination, number, hold in zip(jobs, destinations, numbers, holds, strict=True):
        if number == PARKED:  # not its key's turn: woken when it is
            results.append("queued")
            continue
        if number == 0:  # another copy holds its lock: try again as a task
            runtime.schedule(job, min(hold, runtime.max_hop))
            results.append("busy")
            continue
        try:
            results.append(delivery.run_attempt(runtime, job, destination, number))
        except RedisError as exc:  # the outcome could not be recorded: take the job up again
            runtime.interrupted.set()
            log.warning("delivery %s interrupted: %s", job["delivery_id"], exc)
            results.append(_until_redis_answers(runtime, job))
    return results


def _until_redis_answers(runtime: Runtime, job: Job) -> str:
    """Run the job as its task would (done → dropped, lock held → a task after the
    lock's hold, else an attempt), pausing while Redis is away. Gives up only at shutdown:
    the node then stops beating, and another worker takes the job over."""
    while True:
        try:
            return delivery.deliver_job(runtime, job)
        except RedisError as exc:
            runtime.interrupted.set()
            log.warning("delivery %s paused: %s", job["delivery_id"], exc)
            if runtime.stopping.wait(REDIS_PAUSE):
                return "interrupted"


def _routed(matches: list[RouteMatch], jobs: list[Job], version: str) -> HistoryEntry:
    if not jobs:
        return history_entry(Step.UNROUTED, rules_version=version)
    return history_entry(
        Step.ROUTED,
        routes=[match.route for match in matches],
        destinations=[job["destination"] for job in jobs],
        rules_version=version,
    )


def _holds(destinations: list[Destination | None]) -> list[float]:
    """Each first attempt's lock: long enough for the attempts before it and its own."""
    holds, total = [], 0.0
    for destination in destinations:
        total += delivery.timeout_of(destination) + delivery.LOCK_MARGIN
        holds.append(total)
    return holds


def _count(matches: list[RouteMatch]) -> None:
    metric = metrics.m()
    for match in matches:
        metric.routed.labels(match.route).inc()
    if not matches:
        metric.unrouted.inc()


def _routing_failed(runtime: Runtime, event: Event, version: str, reason: str) -> None:
    """Store the event as a routing dead letter with ``reason``; its text made valid
    first (an event accepted before the door replaced lone surrogates holds some, which
    no Redis key can)."""
    event = valid(event)
    entries = [
        history_entry(Step.RECEIVED, rules_version=version),
        history_entry(Step.DEAD_LETTERED, reason=reason),
    ]
    record = routing_dead_letter(event, version, reason)
    carried = tracing.context()
    if carried:
        record["trace"] = carried
    woken = runtime.store.routing_failed(event, entries, record)
    ordering.publish(runtime, woken)
