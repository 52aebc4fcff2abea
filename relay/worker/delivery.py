"""Routing and delivery: what the ``relay.route`` and ``relay.deliver`` tasks do.

A *job* is the JSON-native description of one delivery — one (event, destination) pair —
carried by a ``relay.deliver`` task message::

    {"delivery_id": "<event id>:<destination>", "event": {...}, "route": "failures",
     "destination": "crm", "rules_version": "ab12…", "retry": {"attempts": 20, …},
     "gen": 0, "not_before": 1700000000.0 | None}

The delivery id is stable: every retry and replay of the pair carries the same one (sent
to HTTP destinations as ``webhook-id``).

Redelivered task messages are harmless (see ``relay.state.store.DeliveryState``): a message of an
older generation is dropped, a delivery already done is not sent again, a lock keeps two
copies from sending at once. A wait longer than the broker's visibility timeout allows
is split into hops of at most half of it, so a scheduled retry is never redelivered while
it waits (the Celery-on-Redis ETA trap).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from redis import RedisError

from relay import metrics
from relay.actions import registry as dispatch
from relay.actions import Outcome, RetryPolicy, next_delay, should_retry
from relay.events import utc_now_iso
from relay.rules.reloader import RulesHolder
from relay.actions.replies import ReplyState, apply_opt_keywords, skip_reason
from relay.rules import Destination, SmsReplyDestination, TemplateError
from relay.settings import Settings
from relay.state.store import Store

log = logging.getLogger("relay.deliver")

#: seconds a lock outlives the attempt's own timeout, so a slow attempt keeps it
LOCK_MARGIN = 5.0

Schedule = Callable[[dict, float], None]


@dataclass
class Runtime:
    """What routing and delivery need in a worker process."""

    settings: Settings
    store: Store
    replies: ReplyState
    rules: RulesHolder
    schedule: Schedule  # (job, countdown seconds) → publish a relay.deliver task
    max_hop: float  # longest countdown a task message may wait (half the visibility timeout)


def delivery_id(event_id: str, destination: str) -> str:
    return f"{event_id}:{destination}"


# -- routing ------------------------------------------------------------------------------


def route_event(runtime: Runtime, event: dict) -> list[dict]:
    """Record the event, match it, schedule one job per destination; returns the jobs.

    Should matching itself fail (a bug), the event becomes a dead letter with no
    destination, which a replay routes again.
    """
    if runtime.store.is_routed(event["id"]):
        runtime.store.pending.settle_now("route:" + event["id"])
        log.info("event %s: duplicate route task dropped (already routed)", event["id"])
        return []
    ruleset = runtime.rules.current
    apply_opt_keywords(runtime.replies, event)
    try:
        matches = ruleset.match(event)
        jobs = [
            _job(event, match.route, name, ruleset.version, match.retry[name])
            for match in matches
            for name in match.destinations
        ]
    except Exception as exc:
        log.exception("routing %s failed", event["id"])
        _routing_failed(runtime, event, ruleset.version, exc)
        return []
    received = {"step": "received", "rules_version": ruleset.version}
    if jobs:
        routed = {
            "step": "routed",
            "routes": [match.route for match in matches],
            "destinations": [job["destination"] for job in jobs],
            "rules_version": ruleset.version,
        }
    else:
        routed = {"step": "unrouted", "rules_version": ruleset.version}
    runtime.store.record_event(event, received, routed, jobs=jobs)
    for job in jobs:
        runtime.schedule(job, 0)
    _count_routing(matches)
    log.info(
        "routed %s to %s",
        event["id"],
        [job["destination"] for job in jobs] or "nothing",
        extra={
            "event_id": event["id"],
            "step": "routed" if jobs else "unrouted",
            "route": ",".join(match.route for match in matches) or None,
            "rules_version": ruleset.version,
        },
    )
    return jobs


def _count_routing(matches) -> None:
    metric = metrics.m()
    for match in matches:
        metric.routed.labels(match.route).inc()
    if not matches:
        metric.unrouted.inc()


def _routing_failed(runtime: Runtime, event: dict, version: str, exc: Exception) -> None:
    reason = f"routing failed: {type(exc).__name__}: {exc}"
    received = {"step": "received", "rules_version": version}
    runtime.store.record_event(
        event, received, {"step": "dead_lettered", "reason": reason}, routed=False
    )
    runtime.store.dead_letters.add(
        {
            "id": f"{event['id']}:(routing)",
            "event": event,
            "route": None,
            "destination": None,
            "rules_version": version,
            "retry": None,
            "reason": reason,
            "dead_at": utc_now_iso(),
            "attempts": [],
        }
    )


def _job(event: dict, route: str, destination: str, version: str, retry) -> dict:
    return {
        "delivery_id": delivery_id(event["id"], destination),
        "event": event,
        "route": route,
        "destination": destination,
        "rules_version": version,
        "retry": {"attempts": retry.attempts, "initial": retry.initial, "max": retry.max},
        "gen": 0,
        "not_before": None,
    }


# -- delivering ---------------------------------------------------------------------------


def deliver_job(runtime: Runtime, job: dict) -> str:
    """Run one delivery task message; returns what happened (for logs and tests)."""
    state = runtime.store.deliveries
    did = job["delivery_id"]
    wait = (job.get("not_before") or 0) - time.time()
    if wait > 0.5:
        runtime.schedule(job, min(wait, runtime.max_hop))
        return "waiting"
    # the rules that routed it, so an in-flight delivery outlives a reload
    destination = runtime.rules.get(job.get("rules_version")).destinations.get(job["destination"])
    hold = _timeout_of(destination) + LOCK_MARGIN
    verdict, number = state.begin(did, job.get("gen", 0), hold)
    if verdict == "done":
        runtime.store.pending.settle_now("deliver:" + did)
        return _dropped(did, "already_done")
    if verdict == "stale":
        return _dropped(did, "stale")
    if verdict == "busy":
        runtime.schedule(job, min(hold, runtime.max_hop))
        return "busy"
    result = "failed"
    try:
        result = _attempt(runtime, job, destination, number)
        return result
    finally:
        if result != "delivered":  # a delivered one dropped its lock in the same transaction
            state.release(did)


def _dropped(did: str, why: str) -> str:
    """A redelivered or superseded task message: nothing to do (logged for operators)."""
    log.info("delivery %s: duplicate task message dropped (%s)", did, why)
    return why


def _attempt(runtime: Runtime, job: dict, destination: Destination | None, number: int) -> str:
    """Attempt ``number`` (already counted, lock held): skip, send, then settle or retry."""
    state = runtime.store.deliveries
    did = job["delivery_id"]
    reason = _skip_reason(runtime, job, destination)
    if reason:
        state.mark_done(did)
        runtime.store.pending.settle_now("deliver:" + did)
        _history(runtime, job, "skipped", reason=reason)
        _step(job, destination, "skipped", "delivery %s skipped: %s", did, reason)
        return "skipped"
    policy = RetryPolicy.from_mapping(job["retry"])
    if number > policy.attempts:
        reason = f"gave up after {policy.attempts} attempts (some did not finish)"
        return _dead_letter(runtime, job, reason, destination)
    started = utc_now_iso()
    if destination is None:
        outcome = _missing(job)
    else:
        outcome = perform(destination, job, runtime.settings)
    attempt = _observe_attempt(job, number, started, outcome)
    if outcome.ok:
        entries = [
            _entry(job, "attempt", **_without_time(attempt)),
            _entry(job, "delivered", attempt=number),
        ]
        state.finish_delivered(did, job["event"]["id"], attempt, entries)
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
    state.log_attempt(did, attempt)
    _history(runtime, job, "attempt", **_without_time(attempt))
    if should_retry(outcome, number, policy):
        delay = next_delay(outcome, number, policy)
        _schedule_retry(runtime, job, delay)
        _history(runtime, job, "retry_scheduled", attempt=number, delay=round(delay, 3))
        _step(job, destination, "retry", "delivery %s retry in %.1fs", did, delay, attempt=number)
        return "retry"
    reason = outcome.error or outcome.kind
    if outcome.kind == "transient":
        reason = f"gave up after {number} attempts: {reason}"
    return _dead_letter(runtime, job, reason, destination)


def _skip_reason(runtime: Runtime, job: dict, destination: Destination | None) -> str | None:
    """Why an auto-reply must not go out (opt-out, loop, cooldown), or None."""
    if not isinstance(destination, SmsReplyDestination):
        return None
    event = job["event"]
    reason = skip_reason(destination, event, runtime.settings.own_numbers, runtime.replies)
    if reason is None and destination.cooldown:
        owner = job["delivery_id"]
        if not runtime.replies.claim_cooldown(
            job["destination"], event["sender"], destination.cooldown, owner
        ):
            reason = "cooldown: this sender got a reply from this destination recently"
    return reason


def _schedule_retry(runtime: Runtime, job: dict, delay: float) -> None:
    gen = runtime.store.deliveries.next_generation(job["delivery_id"])
    follow_up = {**job, "gen": gen, "not_before": time.time() + delay}
    pending = runtime.store.pending
    pipe = runtime.store.redis.pipeline(transaction=True)
    pending.register(
        pipe,
        "deliver:" + job["delivery_id"],
        "relay.deliver",
        [follow_up],
        due=follow_up["not_before"],
    ).execute()
    runtime.schedule(follow_up, min(delay, runtime.max_hop))


def _observe_attempt(job: dict, number: int, started: str, outcome: Outcome) -> dict:
    """The attempt's record; its metric and log line (no I/O)."""
    metrics.m().delivery_seconds.labels(job["destination"]).observe(outcome.latency)
    log.info(
        "delivery %s attempt %d: %s %s",
        job["delivery_id"],
        number,
        outcome.kind,
        outcome.error or outcome.status or "",
        extra=_fields(
            job, step="attempt", attempt=number, outcome=outcome.kind, status=outcome.status
        ),
    )
    return {
        "attempt": number,
        "at": started,
        "outcome": outcome.kind,
        "status": outcome.status,
        "error": outcome.error,
        "latency": round(outcome.latency, 4),
    }


def _without_time(attempt: dict) -> dict:
    return {key: value for key, value in attempt.items() if key != "at"}


def _fields(job: dict, **more) -> dict:
    """The structured fields of a delivery log line."""
    return {
        "event_id": job["event"]["id"],
        "delivery_id": job["delivery_id"],
        "route": job["route"],
        "destination": job["destination"],
        **more,
    }


def _step(job: dict, destination, outcome: str, message: str, *args, **more) -> None:
    """Count a delivery's step in the metrics and log it as one structured line."""
    kind = getattr(destination, "type", "unknown")
    metrics.m().deliveries.labels(job["destination"], kind, outcome).inc()
    level = logging.WARNING if outcome == "dead_letter" else logging.INFO
    log.log(level, message, *args, extra=_fields(job, step=outcome, outcome=outcome, **more))


def _observe_end_to_end(event: dict) -> None:
    try:
        received = datetime.fromisoformat(event["received_at"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return
    elapsed = (datetime.now(timezone.utc) - received).total_seconds()
    metrics.m().end_to_end_seconds.observe(max(elapsed, 0.0))


def _dead_letter(
    runtime: Runtime, job: dict, reason: str, destination: Destination | None = None
) -> str:
    did = job["delivery_id"]
    if isinstance(destination, SmsReplyDestination) and destination.cooldown:
        # the reply never went out: the sender may get the next one
        runtime.replies.release_cooldown(job["destination"], job["event"]["sender"], did)
    record = {
        "id": did,
        "event": job["event"],
        "route": job["route"],
        "destination": job["destination"],
        "rules_version": job["rules_version"],
        "retry": job["retry"],
        "reason": reason,
        "dead_at": utc_now_iso(),
        "attempts": runtime.store.deliveries.attempts(did),
    }
    runtime.store.dead_letters.add(record)
    runtime.store.pending.settle_now("deliver:" + did)
    _history(runtime, job, "dead_lettered", reason=reason)
    _step(job, destination, "dead_letter", "delivery %s dead-lettered: %s", did, reason)
    return "dead_lettered"


def _entry(job: dict, step: str, **fields) -> dict:
    """A history entry about this delivery."""
    return {
        "step": step,
        "delivery_id": job["delivery_id"],
        "route": job["route"],
        "destination": job["destination"],
        **fields,
    }


def _history(runtime: Runtime, job: dict, step: str, **fields) -> None:
    runtime.store.add_history(job["event"]["id"], _entry(job, step, **fields))


def _missing(job: dict) -> Outcome:
    return Outcome("permanent", error=f"destination {job['destination']!r} is not in the rules")


def _timeout_of(destination: Destination | None) -> float:
    return getattr(destination, "timeout", 10.0) or 10.0


# -- performing one attempt ---------------------------------------------------------------


def perform(destination: Destination, job: dict, settings: Settings) -> Outcome:
    """Render and send one attempt; a template error is a permanent failure.

    An unexpected exception (a bug) is a permanent failure too, so the delivery ends as a
    dead letter that can be replayed once fixed, instead of vanishing with the task.
    """
    try:
        return dispatch.send(
            destination, dispatch.prepare(destination, job, settings), job, settings
        )
    except TemplateError as exc:
        return Outcome("permanent", error=f"template error: {exc}")
    except RedisError:
        raise  # infrastructure: the task layer gives the message back
    except Exception as exc:
        log.exception("delivery %s failed unexpectedly", job["delivery_id"])
        return Outcome("permanent", error=f"internal error: {type(exc).__name__}: {exc}")
