"""Auto-reply safety in the worker: the rules of :mod:`relay.rules.replies` over the
opt-outs and cooldowns kept in Redis (:class:`relay.state.replies.ReplyState`), at the
three points where a delivery meets them:

- :func:`before_matching` (routing): the opt-out a message decides is recorded, and the
  event says ``sender_opted_out`` and ``opt_out_ambiguous`` before the rules see it;
- :func:`before_attempt` (each attempt of an ``sms_reply``): why it must not go out —
  opted out (read again: a STOP may have come since the routing), not a phone number, a
  short code, one of our own numbers, or the cooldown held by another delivery;
- :func:`gave_up` (a dead letter): a reply that never went out gives its cooldown back.
"""

from __future__ import annotations

from relay.events import Event, Job
from relay.rules import Destination, SmsReplyDestination
from relay.rules.replies import OptWords, apply_opt_keywords, skip_reason
from relay.worker.runtime import Runtime

#: why a reply held back by its cooldown is skipped
COOLDOWN = "cooldown: this sender got a reply from this destination recently"


def before_matching(runtime: Runtime, event: Event) -> None:
    """Record the opt-out (or opt-in) ``event`` decides; set its opt-out fields."""
    apply_opt_keywords(runtime.store.replies, event, OptWords.of(runtime.settings))


def before_attempt(runtime: Runtime, job: Job, destination: Destination | None) -> str | None:
    """Why this attempt must not go out, or None; a reply with a ``cooldown`` that may go
    claims the window for its delivery (its own retries keep it)."""
    if not isinstance(destination, SmsReplyDestination):
        return None
    event, replies = job["event"], runtime.store.replies
    reason = skip_reason(destination, event, runtime.settings.own_numbers, replies.opted_out)
    if reason is None and destination.cooldown:
        sender = event.get("sender", "")
        if not replies.claim_cooldown(
            job["destination"], sender, destination.cooldown, job["delivery_id"]
        ):
            reason = COOLDOWN
    return reason


def gave_up(runtime: Runtime, job: Job, destination: Destination | None) -> None:
    """A delivery dead-lettered: a reply that never went out frees its cooldown, so the
    sender may get the next one."""
    if isinstance(destination, SmsReplyDestination) and destination.cooldown:
        runtime.store.replies.release_cooldown(
            job["destination"], job["event"].get("sender", ""), job["delivery_id"]
        )
