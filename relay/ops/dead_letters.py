"""Operator tools for dead letters: list, show, replay, delete, purge (pages of them:
:mod:`relay.ops.dead_letter_pages`).

Plain functions over a :class:`relay.state.Store` and, for replays, a *publisher*:
anything with Celery's ``send_task(name, args=[...])`` (the web process's or a command's
Celery app). ``relay.cli.dlq`` and ``relay.web.api`` are thin adapters over them, so the
command line and the HTTP API answer with the same JSON shapes.

A replay registers its task in the pending outbox (``relay.state.pending``) like every task
relay publishes, writes a ``replayed`` history entry, publishes, and only then removes the
dead letter — and only if it is unchanged, so one made anew by a fast failing retry
survives.

Replay publishes even when the destination is no longer in the rules: the worker's rules
are the ones that count (a command line may read another file), and it dead-letters such
a delivery again with the reason ``destination 'x' is not in the rules``. Callers that
know the rules pass their destination names to get a warning in the report.

The dead letter of an ordered delivery that blocks its key (``on_failure: block``,
``relay.state.ordering``) holds the key: its replay goes again as the key's next (its
record carries the key); deleting or purging it releases the key in the same transaction,
and the delivery whose turn that makes is published (``publisher``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from relay import tracing
from relay.events import (
    DeadLetter,
    HistoryEntry,
    Job,
    Step,
    history_entry,
    job_of,
)
from relay.ops import Publisher
from relay.ops.dead_letter_pages import DeadLetterFilter, matching_ids, page_dead_letters
from relay.state import RedisError, Store
from relay.state.index import DEAD, OPEN
from relay.state.keys import storable
from relay.times import epoch

# -- dead letters ---------------------------------------------------------------------------


def list_dead_letters(
    store: Store, destination: str | None = None, now: float | None = None
) -> list[dict[str, Any]]:
    """A summary of every dead letter (of ``destination``, if given), oldest first."""
    now = time.time() if now is None else now
    which = DeadLetterFilter(destination=destination)
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = page_dead_letters(store, which, cursor, now=now)
        found += page.items
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def show_dead_letter(
    store: Store, delivery_id: str, now: float | None = None
) -> dict[str, Any] | None:
    """The whole dead letter (event, every attempt) plus ``age_seconds``, or None."""
    record = store.dead_letters.get(delivery_id) if storable(delivery_id) else None
    if record is None:
        return None
    stored = store.dead_letters.stored_at(delivery_id) or _epoch(record.get("dead_at"))
    now = time.time() if now is None else now
    age = round(max(now - stored, 0.0), 3) if stored is not None else None
    return {**record, "age_seconds": age}


def delete_dead_letter(store: Store, delivery_id: str, publisher: Publisher | None = None) -> bool:
    """Remove one dead letter; False when there is none. One that blocks its key releases
    it (also when it is gone already, expired), and the key's next is published. Like
    every operator's write, confirmed by ``RELAY_REDIS_MIN_REPLICAS`` replicas before it
    returns (else UnavailableError: it may not survive a failover)."""
    if not storable(delivery_id):
        return False
    record = store.dead_letters.get(delivery_id)
    blocking = record is None or "order" in record
    destination = _destination_of(delivery_id) if blocking else None
    deleted, woken = store.remove_dead_letter(delivery_id, destination)
    if deleted or woken:
        store.confirm_replicated()
    _publish(publisher, woken)
    return deleted


def purge(
    store: Store,
    older_than: float | None = None,
    now: float | None = None,
    publisher: Publisher | None = None,
) -> int:
    """Remove the dead letters older than ``older_than`` seconds (None: all); the count.
    The keys they blocked are released, and their next deliveries published."""
    if older_than is None:
        count = store.dead_letters.purge()
    else:
        now = time.time() if now is None else now
        count = store.dead_letters.purge(before=now - older_than)
    if count:
        _publish(publisher, store.ordering.unblock(None))
        store.confirm_replicated()
    return count


def _destination_of(delivery_id: str) -> str:
    """The destination a delivery id names (``<event id>:<destination>``; a re-route's
    ``~n``, a fallback's ``:fallback[~n]``: never ordered, so blocking nothing)."""
    return delivery_id.partition(":")[2]


def _publish(publisher: Publisher | None, jobs: list[Job]) -> None:
    """Publish the ordered deliveries whose turn came. Without a publisher they wait in
    the pending outbox until the sweeper finds them overdue."""
    for job in jobs:
        if publisher is not None:
            publisher.send_task("relay.deliver", args=[job])


@dataclass
class ReplayReport:
    replayed: list[dict[str, Any]] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"replayed": self.replayed, "not_found": self.not_found, "warnings": self.warnings}


def replay(
    store: Store,
    publisher: Publisher,
    delivery_ids: Iterable[str],
    known_destinations: Collection[str] | None = None,
) -> ReplayReport:
    """Send each dead letter again (same delivery id, a fresh retry budget).

    A publishing error is raised after the replays before it are done; the dead letters
    not yet replayed stay, so running the same replay again finishes the job.
    """
    report = ReplayReport()
    for did in dict.fromkeys(delivery_ids):
        record = store.dead_letters.get(did) if storable(did) else None
        if record is None:
            report.not_found.append(did)
            continue
        destination = record["destination"]
        if known_destinations is not None and destination not in (None, *known_destinations):
            report.warnings.append(
                f"{did}: destination {destination!r} is not in the current rules;"
                " the worker will dead-letter it again"
            )
        report.replayed.append(_replay_one(store, publisher, record))
    if report.replayed:
        store.confirm_replicated()
    return report


def replay_all(
    store: Store,
    publisher: Publisher,
    destination: str | None = None,
    known_destinations: Collection[str] | None = None,
) -> ReplayReport:
    """Replay every dead letter (of ``destination``, if given), oldest first."""
    ids, _ = matching_ids(store, DeadLetterFilter(destination=destination))
    return replay(store, publisher, ids, known_destinations)


def _replay_one(store: Store, publisher: Publisher, record: DeadLetter) -> dict[str, Any]:
    """One replay: a new trace (while traces are on), linked to the dead letter's."""
    attributes = {"relay.delivery_id": record["id"], "relay.event_id": record["event"]["id"]}
    with tracing.operation("replay", attributes, record.get("trace")):
        return _replay(store, publisher, record)


def _replay(store: Store, publisher: Publisher, record: DeadLetter) -> dict[str, Any]:
    did, event, destination = record["id"], record["event"], record["destination"]
    carried = tracing.context()  # the replay's trace, which its attempts continue
    entry = history_entry(
        Step.REPLAYED, delivery_id=did, route=record.get("route"), destination=destination
    )
    # Like every task relay publishes, registered in the outbox first (relay.state.pending);
    # the history entry is written before publishing so it precedes the new attempts.
    args: list[Any]
    if destination is None:  # routing failed: route the event again
        task, args, generation = "relay.route", [event, carried] if carried else [event], None
        store.pending.register_routing_now(event["id"], args)
    else:
        generation = store.deliveries.reset_budget(did)
        job = job_of(record, generation)
        if carried:
            job["trace"] = carried
        task, args = "relay.deliver", [job]
        store.pending.register_delivery_now(did, args)
    store.add_history(event["id"], entry)
    store.index.settle_now(event["id"], {did: OPEN}, time.time())  # searchable as pending
    try:
        publisher.send_task(task, args=args)
    except Exception as exc:
        _note_failed_replay(store, event["id"], entry, destination is None, exc)
        raise
    store.dead_letters.remove_if_unchanged(record)
    return {"id": did, "destination": destination, "task": task, "generation": generation}


def _note_failed_replay(
    store: Store, event_id: str, entry: HistoryEntry, routing: bool, exc: Exception
) -> None:
    """The replay did not happen: withdraw it from the outbox and say so in the history."""
    failed: HistoryEntry = {
        **entry,
        "step": Step.REPLAY_FAILED.value,
        "reason": f"{type(exc).__name__}: {exc}",
    }
    try:
        if routing:
            store.pending.settle_routing_now(event_id)
        else:
            store.pending.settle_delivery_now(entry["delivery_id"])
        store.add_history(event_id, failed)
        store.index.settle_now(event_id, {entry["delivery_id"]: DEAD}, time.time())  # dead again
    except RedisError:
        pass  # the dead letter is still there; at worst the outbox sends the replay later


def _epoch(iso: str | None) -> float | None:
    return epoch(iso) if iso else None
