"""Re-route: run stored events through the rules in force now, as new routings
(``POST /api/events/<id>/reroute``, ``relay events reroute ID…``).

Each re-route matches the stored event (as it was normalised when accepted) against the
caller's rules — the web process's, or the file a command loads — and makes one new
delivery per destination, with a new delivery id (``<event id>:<destination>~<n>``, n the
routing's number: 2 for the first re-route), so it is tried afresh with its own retry
budget even where the first routing delivered. Like every task relay publishes, the
deliveries are registered in the pending outbox (with a ``rerouted`` history entry and
the search indexes, one transaction) before their ``relay.deliver`` tasks are published:
should publishing fail, the sweeper publishes them once they are overdue, so a failed
answer must not be repeated. The event's history shows both routings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from relay import tracing
from relay.events import Step, history_entry, new_job
from relay.ops import Publisher
from relay.rules import Ruleset
from relay.state import Store
from relay.state.keys import storable

#: event ids in one re-route request
MAX_IDS = 1000


@dataclass(frozen=True)
class Rerouted:
    """One event's new routing: what matched and the deliveries made."""

    event_id: str
    routing: int
    rules_version: str
    routes: tuple[str, ...]
    destinations: tuple[str, ...]
    delivery_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "routing": self.routing,
            "rules_version": self.rules_version,
            "routes": list(self.routes),
            "destinations": list(self.destinations),
            "delivery_ids": list(self.delivery_ids),
        }


@dataclass
class RerouteReport:
    rerouted: list[Rerouted] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rerouted": [item.to_dict() for item in self.rerouted],
            "not_found": self.not_found,
        }


def reroute(
    store: Store, publisher: Publisher, ruleset: Ruleset, event_ids: Iterable[str]
) -> RerouteReport:
    """Route each stored event again through ``ruleset`` and publish its new deliveries.
    Ids of events no longer kept (RELAY_HISTORY_TTL) are reported as not found. A
    publishing error is raised after the re-routes before it are done (see the module)."""
    report = RerouteReport()
    for event_id in dict.fromkeys(event_ids):
        event = store.event(event_id) if storable(event_id) else None
        if event is None:
            report.not_found.append(event_id)
            continue
        report.rerouted.append(_reroute_one(store, publisher, ruleset, event))
    if report.rerouted:
        store.confirm_replicated()
    return report


def _reroute_one(store: Store, publisher: Publisher, ruleset: Ruleset, event: Any) -> Rerouted:
    """One re-route: a new trace (while traces are on), linked to the first routing's."""
    origin = _traceparent(store, event["id"]) if tracing.enabled else None
    with tracing.operation("reroute", {"relay.event_id": event["id"]}, origin):
        return _reroute(store, publisher, ruleset, event)


def _traceparent(store: Store, event_id: str) -> str | None:
    """The trace the event was first routed in (its ``received`` history entry)."""
    return next((e["traceparent"] for e in store.history(event_id) if "traceparent" in e), None)


def _reroute(store: Store, publisher: Publisher, ruleset: Ruleset, event: Any) -> Rerouted:
    matches = ruleset.match(event)
    routing = store.next_routing(event["id"])
    jobs = [
        new_job(
            event,
            match.route,
            name,
            ruleset.version,
            match.retry[name].spec(),
            routing=routing,
        )
        for match in matches
        for name in match.destinations
    ]
    carried = tracing.context()  # the re-route's trace, which the attempts continue
    if carried:
        for job in jobs:
            job["trace"] = carried
    routes = [match.route for match in matches]
    entry = history_entry(
        Step.REROUTED,
        rules_version=ruleset.version,
        routing=routing,
        routes=routes,
        destinations=[job["destination"] for job in jobs],
        delivery_ids=[job["delivery_id"] for job in jobs],
    )
    store.reroute(event, entry, jobs)
    for job in jobs:
        publisher.send_task("relay.deliver", args=[job])
    return Rerouted(
        event_id=event["id"],
        routing=routing,
        rules_version=ruleset.version,
        routes=tuple(routes),
        destinations=tuple(job["destination"] for job in jobs),
        delivery_ids=tuple(job["delivery_id"] for job in jobs),
    )
