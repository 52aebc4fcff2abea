"""Message lifecycle in the worker: what a routed receipt says about its message, and the
``receipt_overdue`` events of messages whose final receipt did not come in time.

Deadlines are fired by the sweeper (``relay.worker.sweeper``): claimed once in Redis
(``relay.state.lifecycle``), then each overdue event is accepted through the same call
as a webhook's events (``Store.accept``, deduped on its ``transid``), so it is stored and
routed by the rules like any other; a node killed in between leaves its claims to the
sweeper that takes its work over, and the dedupe keeps the second firing from counting.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from relay import metrics
from relay.codes import code_label, status_label
from relay.events import Event
from relay.parsing import overdue_event
from relay.state import RedisError, Store
from relay.state.lifecycle import FINAL_IN_TIME, FINAL_LATE, Outcome
from relay.times import epoch

log = logging.getLogger("relay.lifecycle")

#: an event's ordering keys (``Ruleset.order_values``), for destinations ``ordered_by``
OrdersOf = Callable[[Event], list[tuple[str, str]]]


def counted(store: Store, event: Event, outcome: Outcome) -> None:
    """The metrics of a receipt routed once: by status and code, and what it did to its
    message (the time to final, a late final), also counted per hour for the console."""
    if event.get("kind") != "delivery_receipt":
        return
    metric = metrics.m()
    status, code = status_label(event.get("status", "")), code_label(event.get("code", ""))
    metric.receipts.labels(status, code).inc()
    if outcome.what not in (FINAL_IN_TIME, FINAL_LATE):
        return
    seconds = None
    own = epoch(event.get("timestamp")) or epoch(event.get("received_at"))
    if outcome.first_own is not None and own is not None:
        seconds = max(own - outcome.first_own, 0.0)
        metric.message_final_seconds.observe(seconds)
    try:
        store.lifecycle.count_final(seconds, outcome.what == FINAL_LATE)
    except RedisError as exc:  # a statistic for the console: never worth holding a delivery
        log.warning("the console's count of a final receipt was lost: %s", exc)
    if outcome.what == FINAL_LATE:
        metric.messages_late.inc()
        log.info(
            "message %s: final receipt %s came after it was overdue (late)",
            event.get("transid"),
            event.get("id"),
            extra={"event_id": event.get("id"), "step": "late"},
        )


def fingerprint(transid: str) -> str:
    """The dedupe fingerprint of a message's one overdue event."""
    return hashlib.sha256(f"receipt_overdue\0{transid}".encode()).hexdigest()


def fire_due(store: Store, orders_of: OrdersOf | None = None, now: float | None = None) -> int:
    """Claim the messages whose deadline passed and accept one ``receipt_overdue`` event
    for each; returns how many were accepted (a copy fired before is a duplicate)."""
    now = time.time() if now is None else now
    due = store.lifecycle.claim_due(now)
    if not due:
        return 0
    events = [overdue_event(message, now) for message in due]
    orders = [orders_of(event) for event in events] if orders_of else ()
    accepted = store.accept([fingerprint(m.transid) for m in due], events, orders)
    store.lifecycle.fired([m.transid for m in due])
    for event, new in zip(events, accepted, strict=True):
        if new:
            metrics.m().messages_overdue.inc()
            log.warning(
                "message %s to %s: no final receipt in %ds (last %s); receipt_overdue %s",
                event["transid"],
                event.get("destination", ""),  # masked by the log format
                event["age_seconds"],
                event["last_status"] or "-",
                event["id"],
                extra={"event_id": event["id"], "step": "receipt_overdue"},
            )
    return sum(accepted)
