"""The records relay passes around, each with one definition and one constructor.

- :class:`Event` — the normalized notification that rules, templates, receivers and
  history see (README: "The event"). A plain JSON-native dict, so that it travels through
  Celery's JSON serializer unchanged; fields of the other kind are absent, not null.
  Built from a payload by :mod:`relay.parsing` (its normalisation lives there).
- :class:`Job` — one delivery: one (event, destination) pair, carried by a
  ``relay.deliver`` task message (:func:`new_job`).
- :class:`Attempt` — one finished try at a job (:func:`new_attempt`).
- :class:`HistoryEntry` — one step in an event's life (:func:`history_entry`,
  :func:`delivery_entry`); its ``step`` is a :class:`Step`.
- :class:`DeadLetter` — a delivery (or a routing) that gave up (:func:`dead_letter`,
  :func:`routing_dead_letter`).
- :class:`Failure` — what a fallback delivery carries about the delivery that gave up
  (:func:`new_failure`); :func:`fallback_job` builds that delivery.
- :class:`AlertGroup` — the alerts of one notification group, claimed for one message
  (:func:`new_alert_group`).
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any, TypedDict

DELIVERY_RECEIPT = "delivery_receipt"
INBOUND_MESSAGE = "inbound_message"
RECEIPT_OVERDUE = "receipt_overdue"
#: the ``source`` of the events relay makes itself
OWN_SOURCE = "relay"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIR_SPLIT = re.compile(r"[;&]")


def new_id(now: float | None = None) -> str:
    """A ULID: 26 characters, sortable by creation time (ms), 80 random bits."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Event(TypedDict, total=False):
    """The normalized event. Common fields first; then a receipt's, then a message's."""

    id: str
    kind: str
    source: str
    received_at: str
    raw: Any
    timestamp: str
    channel: str
    # delivery_receipt
    status: str
    final: bool
    code: str
    code_description: str
    description: str
    additional_info: str
    destination: str
    transid: str
    subtid: str
    correlation_id: str
    callback_data: str
    callback: dict[str, Any]
    callback_error: str
    # inbound_message
    tid: str
    user_id: str
    network_id: str
    sender: str
    recipient: str
    text: str
    keyword: str
    sender_opted_out: bool
    opt_out_ambiguous: bool
    # receipt_overdue (with transid, destination, callback, callback_data, correlation_id)
    last_status: str
    last_code: str
    first_received_at: str
    age_seconds: int


# -- deliveries ----------------------------------------------------------------------------


def delivery_id(event_id: str, destination: str) -> str:
    """The stable id of one (event, destination) delivery, sent as ``webhook-id``."""
    return f"{event_id}:{destination}"


def rerouted_delivery_id(event_id: str, destination: str, routing: int) -> str:
    """The id of a delivery made by the ``routing``-th routing of an event (2: its first
    re-route): ``<event id>:<destination>~<routing>``, new so that it is tried afresh."""
    return f"{event_id}:{destination}~{routing}"


_ROUTING_MARK = re.compile(r"~(\d+)$")  #: what :func:`rerouted_delivery_id` appends


def routing_mark(target: str) -> tuple[str, int]:
    """``(destination, routing)`` of a delivery id's part after the event id: ``hook~2`` →
    ``("hook", 2)``, ``hook`` → ``("hook", 1)`` (the first routing's). Destination names
    may not end so (the rules loader refuses them)."""
    mark = _ROUTING_MARK.search(target)
    return (target[: mark.start()], int(mark.group(1))) if mark else (target, 1)


#: the "destination" part of a routing dead letter's id (``<event id>:(routing)``)
ROUTING = "(routing)"
#: ends the id of a delivery to a fallback (``<failed delivery id>:fallback[~n]``)
FALLBACK_MARK = ":fallback"
_FALLBACK_ID = re.compile(r":fallback(?:~\d+)?$")


class RetrySpec(TypedDict):
    """A retry policy as a job carries it (seconds)."""

    attempts: int
    initial: float
    max: float


class Failure(TypedDict):
    """The dead-lettered delivery a fallback delivery stands in for: its ``destination``,
    ``delivery_id``, how many ``attempts`` it made and its ``last_error`` (the reason)."""

    destination: str
    delivery_id: str
    attempts: int
    last_error: str


def new_failure(destination: str, delivery_id: str, attempts: int, last_error: str) -> Failure:
    return {
        "destination": destination,
        "delivery_id": delivery_id,
        "attempts": attempts,
        "last_error": last_error,
    }


class _FallbackPart(TypedDict, total=False):
    #: set only on a delivery to a fallback: the delivery it stands in for
    failure: Failure
    #: set only on a replayed delivery (and its dead letter): how many times it was
    #: replayed, so that each of its failures hands over to a fallback delivery of its own
    replays: int


class Order(TypedDict):
    """The key an ordered delivery goes in turn with (a destination's ``ordered_by``):
    the field (``by``), the event's value of it, that value's short hash (``key``, what
    names its state in Redis) and whether its dead letter holds the key (``block``)."""

    by: str
    value: str
    key: str
    block: bool


class _OrderPart(TypedDict, total=False):
    #: set only on an ordered delivery (and the dead letter of one that blocks its key)
    order: Order


class _TracePart(TypedDict, total=False):
    #: set only while traces are on: the W3C trace context (``traceparent``, maybe
    #: ``tracestate``) its attempts continue (``relay.tracing``)
    trace: dict[str, str]


class Job(_FallbackPart, _OrderPart, _TracePart):
    """One delivery. ``gen`` is the generation of its live task message (an older one is
    a stale copy); ``not_before`` the epoch second before which it must not be tried;
    ``failure`` (only on a delivery to a fallback) what gave up before it; ``order`` (only
    on an ordered delivery) its key."""

    delivery_id: str
    event: Event
    route: str | None
    destination: str
    rules_version: str
    retry: RetrySpec
    gen: int
    not_before: float | None


def new_job(
    event: Event,
    route: str | None,
    destination: str,
    rules_version: str,
    retry: RetrySpec,
    gen: int = 0,
    not_before: float | None = None,
    routing: int = 1,
) -> Job:
    """A job of the ``routing``-th routing of ``event`` (1: the first; see
    :func:`rerouted_delivery_id`)."""
    did = (
        delivery_id(event["id"], destination)
        if routing == 1
        else rerouted_delivery_id(event["id"], destination, routing)
    )
    return {
        "delivery_id": did,
        "event": event,
        "route": route,
        "destination": destination,
        "rules_version": rules_version,
        "retry": retry,
        "gen": gen,
        "not_before": not_before,
    }


def fallback_id(failed_delivery_id: str, replays: int = 0) -> str:
    """The id of the delivery to the fallback that stands in for ``failed_delivery_id``:
    one per dead-lettered delivery (``<event id>:<destination>:fallback``), and one per
    failure of it once replayed (``…:fallback~2`` after the first replay, ``~3`` …), so a
    receiver deduping by ``webhook-id`` takes each."""
    suffix = f"{FALLBACK_MARK}~{replays + 1}" if replays else FALLBACK_MARK
    return failed_delivery_id + suffix


def is_fallback_id(delivery_id: str) -> bool:
    """True for the id of a delivery to a fallback (see :func:`fallback_id`)."""
    return _FALLBACK_ID.search(delivery_id) is not None


def fallback_job(failed: Job, fallback: str, retry: RetrySpec, failure: Failure) -> Job:
    """The delivery of ``failed``'s event to ``fallback``, carrying ``failure``."""
    job = new_job(failed["event"], failed["route"], fallback, failed["rules_version"], retry)
    job["delivery_id"] = fallback_id(failed["delivery_id"], failed.get("replays", 0))
    job["failure"] = failure
    if "trace" in failed:  # the same trace as the delivery it stands in for
        job["trace"] = failed["trace"]
    return job


class Attempt(TypedDict):
    """One finished try: ``outcome`` is ``ok``, ``transient`` or ``permanent``."""

    attempt: int
    at: str
    outcome: str
    status: int | None
    error: str | None
    latency: float


def new_attempt(
    number: int, at: str, outcome: str, status: int | None, error: str | None, latency: float
) -> Attempt:
    return {
        "attempt": number,
        "at": at,
        "outcome": outcome,
        "status": status,
        "error": error,
        "latency": round(latency, 4),
    }


# -- history -------------------------------------------------------------------------------


class Step(str, Enum):
    """The steps of an event's history, in the order they usually come."""

    RECEIVED = "received"
    ROUTED = "routed"
    UNROUTED = "unrouted"
    REROUTED = "rerouted"
    ATTEMPT = "attempt"
    RETRY_SCHEDULED = "retry_scheduled"
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    DEAD_LETTERED = "dead_lettered"
    REPLAYED = "replayed"
    REPLAY_FAILED = "replay_failed"
    FALLBACK = "fallback"  #: a dead-lettered delivery handed to its destination's fallback

    def __str__(self) -> str:
        return self.value


#: steps that end a delivery
ENDS = frozenset({Step.DELIVERED, Step.DEAD_LETTERED, Step.SKIPPED})


class HistoryEntry(TypedDict, total=False):
    """One step of an event's life; which fields are present depends on ``step``."""

    at: str
    step: str
    rules_version: str
    routes: list[str]
    destinations: list[str]
    delivery_ids: list[str]
    routing: int
    delivery_id: str
    route: str | None
    destination: str | None
    reason: str
    attempt: int
    outcome: str
    status: int | None
    error: str | None
    latency: float
    delay: float
    fallback_of: str
    traceparent: str  #: the routing's trace (``received``, while traces are on)


def history_entry(step: Step, **fields: Any) -> HistoryEntry:
    """An entry stamped now (``at``); ``fields`` as :class:`HistoryEntry` names them."""
    entry: dict[str, Any] = {"at": utc_now_iso(), "step": step.value, **fields}
    return entry  # type: ignore[return-value]


def delivery_entry(job: Job, step: Step, **fields: Any) -> HistoryEntry:
    """An entry about the delivery ``job``."""
    return history_entry(
        step,
        delivery_id=job["delivery_id"],
        route=job["route"],
        destination=job["destination"],
        **fields,
    )


# -- dead letters --------------------------------------------------------------------------


class DeadLetter(_FallbackPart, _OrderPart, _TracePart):
    """A delivery that gave up (or a routing that failed: ``destination`` is None); a
    delivery to a fallback keeps its ``failure`` (a replay carries it again), one that
    blocks its key its ``order`` (a replay goes in its turn again); ``trace``: the trace
    its attempts were in (a replay's new trace links to it)."""

    id: str
    event: Event
    route: str | None
    destination: str | None
    rules_version: str
    retry: RetrySpec | None
    reason: str
    dead_at: str
    attempts: list[Attempt]


def dead_letter(job: Job, reason: str, attempts: list[Attempt]) -> DeadLetter:
    record: DeadLetter = {
        "id": job["delivery_id"],
        "event": job["event"],
        "route": job["route"],
        "destination": job["destination"],
        "rules_version": job["rules_version"],
        "retry": job["retry"],
        "reason": reason,
        "dead_at": utc_now_iso(),
        "attempts": attempts,
    }
    if "failure" in job:
        record["failure"] = job["failure"]
    if "replays" in job:
        record["replays"] = job["replays"]
    if "order" in job and job["order"]["block"]:
        record["order"] = job["order"]
    if "trace" in job:
        record["trace"] = job["trace"]
    return record


def routing_dead_letter(event: Event, rules_version: str, reason: str) -> DeadLetter:
    return {
        "id": delivery_id(event["id"], ROUTING),
        "event": event,
        "route": None,
        "destination": None,
        "rules_version": rules_version,
        "retry": None,
        "reason": reason,
        "dead_at": utc_now_iso(),
        "attempts": [],
    }


def job_of(record: DeadLetter, gen: int) -> Job:
    """The job that replays the dead letter ``record`` as generation ``gen``."""
    assert record["destination"] is not None and record["retry"] is not None
    job = new_job(
        record["event"],
        record["route"],
        record["destination"],
        record["rules_version"],
        record["retry"],
        gen=gen,
    )
    job["delivery_id"] = record["id"]  # a re-route's or a fallback's delivery keeps its id
    if "failure" in record:  # a delivery to a fallback: same failure
        job["failure"] = record["failure"]
    job["replays"] = record.get("replays", 0) + 1
    if "order" in record:  # it holds its key: it goes again as the key's next
        job["order"] = record["order"]
    return job


# -- alerts --------------------------------------------------------------------------------


class AlertExample(TypedDict, total=False):
    """One alert as a notification message shows it; fields present as the kind has them."""

    kind: str
    at: str
    destination: str
    route: str
    event_id: str
    delivery_id: str
    error: str


class AlertGroup(TypedDict):
    """The alerts of one notification group since its last message, claimed for one message.

    ``group`` is its id; ``labels`` the values of the notification's ``group_by`` labels;
    ``counts`` alerts per kind; ``examples`` the latest few, newest first; ``first`` when
    the group began (epoch seconds); ``previous`` when its last message went, if any.
    """

    group: str
    notification: str
    labels: dict[str, str]
    counts: dict[str, int]
    examples: list[AlertExample]
    first: float
    previous: float | None


def new_alert_group(
    group: str,
    notification: str,
    labels: dict[str, str],
    counts: dict[str, int],
    examples: list[AlertExample],
    first: float,
    previous: float | None = None,
) -> AlertGroup:
    return {
        "group": group,
        "notification": notification,
        "labels": labels,
        "counts": counts,
        "examples": examples,
        "first": first,
        "previous": previous,
    }
