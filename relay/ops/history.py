"""Operator views of an event's history: its timeline and each delivery's state, derived
from the history entries (``relay events show``, ``GET /api/events/<ref>``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from relay.events import (
    ENDS,
    Event,
    HistoryEntry,
    Job,
    Step,
    delivery_id,
)
from relay.state import Store
from relay.state.keys import storable
from relay.times import NEVER, parse_time


def event_history(store: Store, ref: str) -> list[dict[str, Any]]:
    """The life of each event ``ref`` names (a relay id, a transid or a tid), in the order
    of the events' own time (a receipt's ``timeStamp``), arrival breaking ties and standing
    in for an own time that is missing or does not parse. A pending ordered delivery that
    is parked says why it waits (``waiting``)."""
    found = []
    for event_id in store.find(ref) if storable(ref) else []:
        event = store.event(event_id)
        if event is not None:
            item = timeline(event, store.history(event_id))
            for delivery in item["deliveries"]:
                pending = delivery["state"] == "pending"
                delivery["waiting"] = waiting(store, delivery["delivery_id"]) if pending else None
            found.append(item)
    return sorted(found, key=_order)


def waiting(store: Store, did: str) -> str | None:
    """Why the ordered delivery ``did`` waits (``waits its turn after 01H… (same
    transid)``: the event of the delivery before it, or an earlier event of the key not
    routed yet), or None when it does not (not ordered, or under way)."""
    spec = store.pending.delivery_task(did)
    job: Job | None = spec["args"][0] if spec and spec.get("task") == "relay.deliver" else None
    if not isinstance(job, dict) or "order" not in job:
        return None
    found = store.ordering.waits(job)
    if found is None:
        return None
    after, why = found
    text = f"waits its turn after {after} (same {job['order']['by']})"
    return text + WHY.get(why, "")


#: what ``waiting`` adds to say what the delivery before it waits for itself
WHY = {
    "blocked": ", whose dead letter holds the key (on_failure: block)",
    "routing": ", not routed yet",
}


def _order(item: Mapping[str, Any]) -> tuple[datetime, datetime, str]:
    arrival = parse_time(item.get("received_at")) or NEVER
    return parse_time(item.get("timestamp")) or arrival, arrival, item["id"]


def timeline(event: Event, history: list[HistoryEntry]) -> dict[str, Any]:
    """What happened to ``event``, derived from its history entries (oldest first)."""
    # the last one: a replayed routing dead letter is received (and routed) again
    received = next(
        (entry for entry in reversed(history) if entry.get("step") == Step.RECEIVED),
        HistoryEntry(),
    )
    return {
        "id": event["id"],
        "kind": event.get("kind"),
        "source": event.get("source"),
        "received_at": event.get("received_at"),
        "timestamp": event.get("timestamp"),  # the event's own time, as its sender wrote it
        "summary": event_label(event),
        "rules_version": received.get("rules_version"),
        **_routing(history),
        "deliveries": deliveries(event["id"], history),
        "history": history,
        "event": event,
    }


def event_label(event: Mapping[str, Any]) -> str:
    """``Delivered 7500`` for a receipt, the keyword for an inbound message, the age and
    last status of an overdue message."""
    if event.get("kind") == "delivery_receipt":
        return " ".join(part for part in (event.get("status"), event.get("code")) if part)
    if event.get("kind") == "receipt_overdue":
        return f"overdue {event.get('age_seconds')}s, last {event.get('last_status') or '-'}"
    return event.get("keyword") or ""


def _routing(history: list[HistoryEntry]) -> dict[str, Any]:
    """Routes matched and the routing state: routed, unrouted, dead_lettered or pending."""
    state: dict[str, Any] = {"routing": "pending", "routes": [], "routing_error": None}
    for entry in history:
        step, routing_entry = entry.get("step"), entry.get("destination") is None
        if step == Step.ROUTED:
            state.update(routing="routed", routes=entry.get("routes", []), routing_error=None)
        elif step == Step.REROUTED:  # the routes of every routing, in order
            routes = list(dict.fromkeys([*state["routes"], *entry.get("routes", [])]))
            state.update(routing="routed", routes=routes, routing_error=None)
        elif step == Step.UNROUTED:
            state.update(routing="unrouted", routes=[], routing_error=None)
        elif step == Step.DEAD_LETTERED and "delivery_id" not in entry:
            state.update(routing="dead_lettered", routing_error=entry.get("reason"))
        elif step == Step.REPLAYED and routing_entry:
            state.update(routing="pending")
        elif step == Step.REPLAY_FAILED and routing_entry:
            state.update(routing="dead_lettered")
    return state


def deliveries(event_id: str, history: list[HistoryEntry]) -> list[dict[str, Any]]:
    """Per delivery (a re-route makes new ones): its attempts and final state (delivered,
    dead_lettered, skipped or pending), derived from the history entries; routed
    destinations with none are pending. A delivery to a fallback is one of its own
    (``fallback_of`` names whose it stands in for)."""
    found: dict[str, dict[str, Any]] = {}
    for entry in history:
        step = entry.get("step")
        if step in (Step.ROUTED, Step.REROUTED):
            names = entry.get("destinations", [])
            ids = entry.get("delivery_ids") or [delivery_id(event_id, name) for name in names]
            for did, name in zip(ids, names, strict=False):
                found.setdefault(did, _delivery(did, name))
            continue
        target, found_id = entry.get("destination"), entry.get("delivery_id")
        if found_id is None or target is None:
            continue
        did = found_id
        item = found.setdefault(did, _delivery(did, target))
        item["route"] = entry.get("route") or item["route"]
        _apply(item, entry)
    return list(found.values())


def _delivery(did: str, destination: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "delivery_id": did,
        "route": None,
        "state": "pending",
        "reason": None,
        "replays": 0,
        "attempts": [],
    }


def _apply(item: dict[str, Any], entry: HistoryEntry) -> None:
    step = entry.get("step")
    if step == Step.ATTEMPT:
        item["attempts"].append(
            {
                "attempt": entry.get("attempt"),
                "at": entry.get("at"),
                "outcome": entry.get("outcome"),
                "status": entry.get("status"),
                "latency": entry.get("latency"),
                "error": entry.get("error"),
            }
        )
    elif step in ENDS:
        item.update(state=step, reason=entry.get("reason"))
    elif step == Step.REPLAYED:
        item.update(state="pending", reason=None, replays=item["replays"] + 1)
    elif step == Step.FALLBACK:
        item.update(state="pending", fallback_of=entry.get("fallback_of"))
    elif step == Step.REPLAY_FAILED:
        item.update(state="dead_lettered", reason=entry.get("reason"))
