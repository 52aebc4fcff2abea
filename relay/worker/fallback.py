"""Fallbacks: a dead-lettered delivery handed to its destination's ``fallback``.

When a delivery to a destination with a ``fallback`` is dead-lettered, the fallback gets
the event as a new delivery (:func:`relay.events.fallback_job`: its own id, retry budget
and history entries) carrying ``failure`` — the destination, its attempts and the last
error — which the fallback's templates read as ``failure.*``. The fallback delivery is
registered in the same transaction as the dead letter (:meth:`DeliveryState.dead`), so a
worker that stops in between loses neither. A delivery to a fallback never falls back
further: its own dead letter is the end.
"""

from __future__ import annotations

import logging

from relay.events import (
    HistoryEntry,
    Job,
    Step,
    delivery_entry,
    fallback_job,
    new_failure,
)
from relay.rules import DEFAULT_RETRY, Destination
from relay.worker.runtime import Runtime

log = logging.getLogger("relay.deliver")


def job_for(
    runtime: Runtime, job: Job, destination: Destination | None, reason: str, attempts: int
) -> Job | None:
    """The delivery to ``destination``'s fallback standing in for the dead-lettered ``job``;
    None when it has none, or ``job`` is itself a delivery to a fallback."""
    if destination is None or destination.fallback is None or "failure" in job:
        return None
    ruleset = runtime.rules.get(job.get("rules_version"))
    target = ruleset.destinations.get(destination.fallback)
    if target is None:  # the loader refuses this; a reload may race with a delivery
        log.warning(
            "fallback %r of %r is not in the rules", destination.fallback, job["destination"]
        )
        return None
    retry = (target.retry or DEFAULT_RETRY).spec()
    failure = new_failure(job["destination"], job["delivery_id"], attempts, reason)
    return fallback_job(job, destination.fallback, retry, failure)


def entry(failed: Job, follow_up: Job) -> HistoryEntry:
    """The history entry that hands ``failed`` to its fallback (the delivery ``follow_up``)."""
    reason = follow_up["failure"]["last_error"]
    return delivery_entry(
        follow_up, Step.FALLBACK, fallback_of=failed["destination"], reason=reason
    )


def publish(runtime: Runtime, failed: Job, follow_up: Job | None) -> None:
    """Publish the first attempt of ``follow_up`` (registered already: if this fails, the
    sweeper publishes it once it is overdue)."""
    if follow_up is None:
        return
    try:
        runtime.schedule(follow_up, 0)
    except Exception as exc:  # the outbox has it; the sweeper will publish it
        log.warning("fallback %s not published yet: %s", follow_up["delivery_id"], exc)
        return
    log.info(
        "delivery %s handed to fallback %s as %s",
        failed["delivery_id"],
        follow_up["destination"],
        follow_up["delivery_id"],
    )
