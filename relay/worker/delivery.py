"""Delivery: one attempt at one (event, destination) pair, and what follows it.

A :class:`relay.events.Job` describes the delivery; its id is stable: every retry and
replay of the pair carries the same one (sent to HTTP destinations as ``webhook-id``).

The state machine of one ``relay.deliver`` task message (:func:`deliver_job`):

- not yet due → wait: published again with a countdown of at most ``max_hop``;
- ``done`` (the destination accepted it already) → dropped, settled;
- ``stale`` (an older generation than the live message) → dropped;
- ``busy`` (another copy holds the lock) → published again after the lock's hold;
- an ordered delivery (``relay.worker.ordering``) that is not its key's turn →
  ``queued``: parked, woken when its turn comes; one no longer in its key's queue → a
  copy of one settled, dropped;
- otherwise the destination's controls may say wait (paused, circuit open, throttled,
  at its concurrency: :mod:`relay.worker.gate`): the attempt is given back uncounted and
  the same message published again with a countdown;
- else the attempt runs (:func:`run_attempt`): skipped (auto-reply safety:
  :mod:`relay.worker.replies`),
  delivered, a retry scheduled (a new generation), or a dead letter.

A wait longer than the broker's visibility timeout allows is split into hops of at most
half of it, so a scheduled retry is never redelivered while it waits (the Celery-on-Redis
ETA trap).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from relay import metrics, tracing
from relay.actions import Outcome, next_delay, registry, should_retry
from relay.events import (
    Attempt,
    Event,
    HistoryEntry,
    Job,
    Step,
    dead_letter,
    delivery_entry,
    new_attempt,
    utc_now_iso,
)
from relay.rules import Destination, RetryPolicy, TemplateError
from relay.settings import Settings
from relay.state import RedisError
from relay.times import epoch
from relay.worker import alerts, fallback, gate, ordering, replies
from relay.worker.runtime import Runtime

log = logging.getLogger("relay.deliver")

#: seconds a lock outlives the attempt's own timeout, so a slow attempt keeps it
LOCK_MARGIN = 5.0


def deliver_job(runtime: Runtime, job: Job) -> str:
    """Run one ``relay.deliver`` task message; returns what happened (logs and tests).
    Ordered deliveries whose turn it settles into are run next, in this thread."""
    with ordering.in_turn(runtime, deliver_job):
        return _deliver_job(runtime, job)


def _deliver_job(runtime: Runtime, job: Job) -> str:
    did = job["delivery_id"]
    wait = (job.get("not_before") or 0) - time.time()
    if wait > 0.5:
        runtime.schedule(job, min(wait, runtime.max_hop))
        return "waiting"
    # the rules that routed it, so an in-flight delivery outlives a reload
    destination = runtime.rules.get(job.get("rules_version")).destinations.get(job["destination"])
    hold = timeout_of(destination) + LOCK_MARGIN
    if "order" in job:
        verdict, number, woken = runtime.store.ordering.begin(job, hold)
        ordering.woke(runtime, woken)
    else:
        verdict, number = runtime.store.deliveries.begin(did, job.get("gen", 0), hold)
    if verdict == "done":
        runtime.store.pending.settle_delivery_now(did)
        return _dropped(did, "already_done")
    if verdict in ("stale", "gone"):
        return _dropped(did, verdict)
    if verdict == "queued":
        return _queued(job)
    if verdict == "busy":
        runtime.schedule(job, min(hold, runtime.max_hop))
        return "busy"
    return run_attempt(runtime, job, destination, number)


def run_attempt(runtime: Runtime, job: Job, destination: Destination | None, number: int) -> str:
    """Attempt ``number`` (counted, lock held): skip, send, then settle, retry or give up.
    The lock is released on every way out.

    First the destination's controls (:mod:`relay.worker.gate`): paused, circuit open,
    throttled or at its concurrency → the attempt is given back uncounted and the
    delivery waits, published again with a countdown."""
    lease = timeout_of(destination) + LOCK_MARGIN
    try:
        verdict = gate.check(runtime, job, destination, lease)
        if not verdict.go:
            return gate.wait(runtime, job, verdict)
        return _attempt(runtime, job, destination, number, verdict.probe)
    except BaseException:
        _release_quietly(runtime, job["delivery_id"])
        gate.release(runtime, job, destination)
        raise


def _queued(job: Job) -> str:
    """Not the key's turn: parked until the deliveries before it settle."""
    log.info(
        "delivery %s waits its turn",
        job["delivery_id"],
        extra=_fields(job, step="queued", reason=job["order"]["by"]),
    )
    return "queued"


def _dropped(did: str, why: str) -> str:
    """A redelivered or superseded task message: nothing to do (logged for operators)."""
    log.info("delivery %s: duplicate task message dropped (%s)", did, why)
    return why


def _attempt(
    runtime: Runtime, job: Job, destination: Destination | None, number: int, probe: bool = False
) -> str:
    state = runtime.store.deliveries
    did = job["delivery_id"]
    reason = replies.before_attempt(runtime, job, destination)
    if reason:
        woken = state.skipped(job, [delivery_entry(job, Step.SKIPPED, reason=reason)])
        gate.release(runtime, job, destination)
        ordering.woke(runtime, woken)
        _step(job, destination, "skipped", "delivery %s skipped: %s", did, reason)
        return "skipped"
    policy = RetryPolicy.from_mapping(job["retry"])
    if number > policy.attempts:
        reason = f"gave up after {policy.attempts} attempts (some did not finish)"
        gate.release(runtime, job, destination)
        return _dead_letter(runtime, job, reason, destination, None)
    kind = getattr(destination, "type", "unknown")
    with tracing.attempt(job, kind, number) as span:
        return _send(runtime, job, destination, number, probe, span)


def _send(
    runtime: Runtime,
    job: Job,
    destination: Destination | None,
    number: int,
    probe: bool,
    span: tracing.Span,
) -> str:
    """The attempt itself (within its span), and what follows it."""
    state = runtime.store.deliveries
    did = job["delivery_id"]
    policy = RetryPolicy.from_mapping(job["retry"])
    started = utc_now_iso()
    outcome = _missing(job) if destination is None else perform(destination, job, runtime.settings)
    tracing.attempted(span, outcome.kind, outcome.status)
    # a delivered attempt's outcome is counted in the controls by its own transaction
    if destination is not None and not outcome.ok:
        gate.settle(runtime, job, destination, outcome, probe)
    attempt = new_attempt(
        number, started, outcome.kind, outcome.status, outcome.error, outcome.latency
    )
    metrics.m().delivery_seconds.labels(job["destination"]).observe(outcome.latency)
    tried = delivery_entry(job, Step.ATTEMPT, **_without_time(attempt))
    if outcome.ok:
        delivered = delivery_entry(job, Step.DELIVERED, attempt=number)
        _delivered(runtime, job, destination, outcome, probe, attempt, [tried, delivered])
        _observe_end_to_end(job["event"])
        _step(
            job,
            destination,
            "success",
            "delivery %s delivered (attempt %d)",
            did,
            number,
            attempt=number,
        )
        return "delivered"
    if should_retry(outcome, number, policy):
        delay = next_delay(outcome, number, policy)
        scheduled = delivery_entry(job, Step.RETRY_SCHEDULED, attempt=number, delay=round(delay, 3))
        follow_up = state.failed(job, attempt, [tried, scheduled], retry_at=time.time() + delay)
        assert follow_up is not None
        runtime.schedule(follow_up, min(delay, runtime.max_hop))
        _step(
            job,
            destination,
            "retry",
            "delivery %s attempt %d: %s %s; retry in %.1fs",
            did,
            number,
            outcome.kind,
            outcome.error or outcome.status or "",
            delay,
            attempt=number,
            status=outcome.status,
        )
        return "retry"
    reason = outcome.error or outcome.kind
    if outcome.kind == "transient":
        reason = f"gave up after {number} attempts: {reason}"
    return _dead_letter(runtime, job, reason, destination, (attempt, tried))


def _delivered(
    runtime: Runtime,
    job: Job,
    destination: Destination | None,
    outcome: Outcome,
    probe: bool,
    attempt: Attempt,
    entries: list[HistoryEntry],
) -> None:
    """One transaction: the outcome counted in the destination's controls, the delivery
    recorded and settled; then the circuit's transition, and the ordered ones woken."""
    counted = None if destination is None else gate.settlement(runtime, job, destination, outcome)
    done = runtime.store.deliveries.delivered(job, attempt, entries, counted)
    if destination is not None:
        if done.counted:
            gate.settled(runtime, job, destination, outcome, probe, done.transition)
        elif done.error is not None:
            gate.not_counted(job, done.error)
    ordering.woke(runtime, done.woken)


def _dead_letter(
    runtime: Runtime,
    job: Job,
    reason: str,
    destination: Destination | None,
    last: tuple[Attempt, Any] | None,
) -> str:
    did = job["delivery_id"]
    replies.gave_up(runtime, job, destination)
    state = runtime.store.deliveries
    entries = [delivery_entry(job, Step.DEAD_LETTERED, reason=reason)]
    attempts = state.attempts(did)
    attempt = None
    if last is not None:
        attempt, tried = last
        attempts.append(attempt)
        entries.insert(0, tried)
    follow_up = fallback.job_for(runtime, job, destination, reason, len(attempts))
    if follow_up is not None:
        entries.append(fallback.entry(job, follow_up))
    record = dead_letter(job, reason, attempts)
    follow_up, woken = state.dead(job, record, entries, last=attempt, fallback=follow_up)
    _step(job, destination, "dead_letter", "delivery %s dead-lettered: %s", did, reason)
    ordering.woke(runtime, woken)
    fallback.publish(runtime, job, follow_up)
    alerts.dead_letter(runtime, job, reason, len(attempts))
    return "dead_lettered"


def _without_time(attempt: Attempt) -> dict[str, Any]:
    return {key: value for key, value in attempt.items() if key != "at"}


def _fields(job: Job, **more: Any) -> dict[str, Any]:
    """The structured fields of a delivery log line."""
    return {
        "event_id": job["event"]["id"],
        "delivery_id": job["delivery_id"],
        "route": job["route"],
        "destination": job["destination"],
        **more,
    }


def _step(job: Job, destination: Any, outcome: str, message: str, *args: Any, **more: Any) -> None:
    """Count a delivery's step in the metrics and log it: one line per attempt."""
    kind = getattr(destination, "type", "unknown")
    metrics.m().deliveries.labels(job["destination"], kind, outcome).inc()
    level = logging.WARNING if outcome == "dead_letter" else logging.INFO
    log.log(level, message, *args, extra=_fields(job, step=outcome, outcome=outcome, **more))


def _observe_end_to_end(event: Event) -> None:
    received = epoch(event.get("received_at"))
    if received is None:
        return
    elapsed = time.time() - received
    metrics.m().end_to_end_seconds.observe(max(elapsed, 0.0))


def _missing(job: Job) -> Outcome:
    return Outcome("permanent", error=f"destination {job['destination']!r} is not in the rules")


def timeout_of(destination: Destination | None) -> float:
    return getattr(destination, "timeout", 10.0) or 10.0


def _release_quietly(runtime: Runtime, did: str) -> None:
    try:
        runtime.store.deliveries.release(did)
    except RedisError:
        pass  # the lock expires by itself


# -- performing one attempt ---------------------------------------------------------------


def perform(destination: Destination, job: Job, settings: Settings) -> Outcome:
    """Render and send one attempt; a template error is a permanent failure.

    An unexpected exception (a bug) is a permanent failure too, so the delivery ends as a
    dead letter that can be replayed once fixed, instead of vanishing with the task.
    """
    try:
        return registry.send(
            destination, registry.prepare(destination, job, settings), job, settings
        )
    except TemplateError as exc:
        return Outcome("permanent", error=f"template error: {exc}")
    except RedisError:
        raise  # infrastructure: the task layer gives the message back
    except Exception as exc:
        log.exception("delivery %s failed unexpectedly", job["delivery_id"])
        return Outcome("permanent", error=f"internal error: {type(exc).__name__}: {exc}")
