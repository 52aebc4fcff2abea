"""The gate before each attempt: pause, circuit breaker, concurrency and rate limit.

:func:`check` asks the shared state (:mod:`relay.state.controls`, one Lua call) whether a
delivery may make its attempt now. When it may not, :func:`wait` puts it back: the attempt
it had begun is not counted (its lock dropped, its attempt counter given back), and its
task message is published again with a countdown through the same hops as a retry (same
generation, so a stale or duplicate copy is still dropped), never sleeping in a worker
thread. How long it waits:

- **rate limit** — exactly until the slot the bucket handed it (waiters are spread one
  slot apart, so they come back in turn); a slot further than one hop away is kept
  through the hops (``not_before``), as a retry's time is;
- **concurrency** — a short recheck (:data:`CONCURRENCY_RECHECK`, with jitter), or sooner
  when the earliest lease ends;
- **paused** — parked: recorded in the destination's parked set (by the gate's own call)
  and rechecked at the pause's end or after :data:`PAUSED_RECHECK` at most;
  ``relay destinations resume`` publishes every parked delivery again at once;
- **circuit open** — parked too, until the cooldown ends (then one attempt is the probe)
  or the probe's lease; when the probe succeeds and the circuit closes, the worker that
  saw it publishes the parked deliveries again at once.

The delivery stays in the pending outbox all along (its due time pushed to the end of
its wait), so the sweeper and take-over still cover it, and ``relay events show`` shows
it pending.

After an attempt, :func:`settle` counts its outcome: a transient failure counts toward
opening the circuit; a success resets the count; a permanent failure (the destination
answered, refusing this one delivery) resets it too, and closes a half-open circuit like
a success: the breaker protects a destination that is down, not one that says no.
"""

from __future__ import annotations

import logging
import random
import time

from relay import metrics
from relay.actions import Outcome
from relay.events import Job
from relay.rules import Destination
from relay.state.controls import Settlement, Verdict
from relay.worker import alerts
from relay.worker.runtime import Runtime

log = logging.getLogger("relay.deliver")

#: seconds at most between two checks of a parked delivery (a backstop: resume and a
#: closing circuit publish parked deliveries again at once)
PAUSED_RECHECK = 60.0
#: seconds at most between two checks of a delivery waiting for a concurrency slot
CONCURRENCY_RECHECK = 0.5
GO = Verdict("go")


def check(runtime: Runtime, job: Job, destination: Destination | None, lease: float) -> Verdict:
    """May this delivery make its attempt now? (No destination: nothing to gate.)"""
    if destination is None:
        return GO
    rate = destination.rate_limit
    breaker = destination.circuit_breaker
    return runtime.store.controls.gate(
        job["destination"],
        job["delivery_id"],
        lease,
        rate=(rate.count, rate.per) if rate else None,
        concurrency=destination.concurrency,
        breaker=breaker is not None,
    )


def wait(runtime: Runtime, job: Job, verdict: Verdict) -> str:
    """Put the delivery back to wait (its begun attempt uncounted); returns
    ``waiting:<reason>``."""
    name, did = job["destination"], job["delivery_id"]
    seconds = _countdown(verdict)
    countdown = min(seconds, runtime.max_hop)
    now = time.time()
    due = now + countdown
    if verdict.reason == "rate_limit" and seconds > countdown:
        # a slot beyond one hop: the hops wait for it (``not_before``), so the delivery
        # keeps its turn rather than asking the bucket again after each hop, which
        # would hand it a new slot behind every other waiter
        due = now + seconds
        job = {**job, "not_before": due}
    parked = verdict.reason in ("paused", "circuit")
    runtime.store.deliveries.postpone(did, due, parked=parked)
    metrics.m().destination_waits.labels(name, verdict.reason).inc()
    runtime.schedule(job, countdown)
    level = logging.DEBUG if verdict.reason in ("rate_limit", "concurrency") else logging.INFO
    log.log(
        level,
        "delivery %s waits %.2fs: %s",
        did,
        due - now,
        verdict.reason,
        extra={
            "event_id": job["event"]["id"],
            "delivery_id": did,
            "destination": name,
            "step": "waiting",
            "reason": verdict.reason,
        },
    )
    return "waiting:" + verdict.reason


def _countdown(verdict: Verdict) -> float:
    if verdict.reason == "paused":
        return PAUSED_RECHECK if verdict.wait is None else min(verdict.wait, PAUSED_RECHECK)
    wait = verdict.wait or 0.0
    if verdict.reason == "concurrency":
        return min(max(wait, 0.05), CONCURRENCY_RECHECK) * random.uniform(0.5, 1.0)
    if verdict.reason == "circuit":
        return wait + 0.01
    return wait  # rate_limit: this waiter's own slot


def settle(
    runtime: Runtime, job: Job, destination: Destination, outcome: Outcome, probe: bool
) -> None:
    """Count an attempt's outcome: the lease, the statistics, the circuit (and its alerts
    when it opens or closes). Never raises: the attempt's own outcome matters more."""
    counted = settlement(runtime, job, destination, outcome)
    try:
        transition = runtime.store.controls.apply(counted)
    except Exception as exc:  # the lease expires by itself
        not_counted(job, exc)
        return
    settled(runtime, job, destination, outcome, probe, transition)


def settlement(
    runtime: Runtime, job: Job, destination: Destination, outcome: Outcome
) -> Settlement:
    """:func:`settle`'s count, not run: for the delivered attempt's own transaction
    (``DeliveryState.delivered``), then :func:`settled` with the transition it made."""
    breaker = destination.circuit_breaker
    return runtime.store.controls.settlement(
        job["destination"],
        job["delivery_id"],
        outcome.kind,
        outcome.latency,
        _error(outcome),
        failures=breaker.failures if breaker else 0,
        cooldown=breaker.cooldown if breaker else 0.0,
    )


def not_counted(job: Job, exc: Exception) -> None:
    log.warning("destination %s: outcome not counted: %s", job["destination"], exc)


def _error(outcome: Outcome) -> str | None:
    return outcome.error or (f"HTTP {outcome.status}" if not outcome.ok else None)


def settled(
    runtime: Runtime,
    job: Job,
    destination: Destination,
    outcome: Outcome,
    probe: bool,
    transition: str,
) -> None:
    """After an outcome was counted: the circuit's logs and alerts when it opened or
    closed, and a closed circuit's parked deliveries published again. Never raises."""
    name = job["destination"]
    breaker = destination.circuit_breaker
    error = _error(outcome)
    if transition in ("opened", "reopened"):
        log.warning(
            "destination %s: circuit %s after %s",
            name,
            transition,
            error,
            extra={"destination": name, "step": "circuit_open"},
        )
    if transition == "opened":
        alerts.emit(
            runtime,
            "circuit_open",
            {"destination": name},
            {"error": error, "failures": breaker.failures if breaker else 0},
        )
    elif transition == "closed":
        log.info(
            "destination %s: circuit closed",
            name,
            extra={"destination": name, "step": "circuit_closed"},
        )
        alerts.emit(runtime, "circuit_closed", {"destination": name}, {"probe": probe})
        try:
            unpark(runtime, name)
        except Exception as exc:  # each parked delivery looks again by itself
            log.warning("destination %s: parked deliveries not published again: %s", name, exc)


def unpark(runtime: Runtime, name: str) -> int:
    """Publish again, at once, the deliveries parked for ``name``; how many."""
    parked = runtime.store.controls.unpark(name)
    for _delivery_id, spec in parked:
        if isinstance(spec, dict) and spec.get("task") == "relay.deliver" and spec.get("args"):
            runtime.schedule(spec["args"][0], 0)
    return len(parked)


def release(runtime: Runtime, job: Job, destination: Destination | None) -> None:
    """Free the concurrency lease of an attempt that ended without an outcome (skipped,
    gave up) or failed; the lease would expire by itself."""
    if destination is not None and destination.concurrency:
        try:
            runtime.store.controls.release(job["destination"], job["delivery_id"])
        except Exception:  # it expires by itself
            pass
