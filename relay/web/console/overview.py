"""The overview page: event counts for the last hour and day, the rules in force, and a
table of the destinations.

:func:`destination_rows` is the one place the table's rows come from. Today it knows each
destination's name and type (from the rules) and its backlog (deliveries in the pending
outbox). Health per destination (state, success rate, p95 latency, last error, rate
limit, pause/resume) is not kept by this build: the page shows those columns only for
rows that have them, and never made up.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import render_template
from flask.typing import ResponseReturnValue

from relay.ops.search import event_counts
from relay.web.console.blueprint import bp
from relay.web.context import Relay, current_relay

BACKLOG_SCAN = 10_000  #: outbox members read, at most, to count the backlog


@dataclass(frozen=True)
class DestinationRow:
    name: str
    type: str
    backlog: int | None  #: deliveries not yet settled; None when not counted in full


def destination_rows(relay: Relay) -> list[DestinationRow]:
    """One row per destination of the rules in force, by name."""
    backlog, complete = relay.store.pending.backlog(BACKLOG_SCAN)
    return [
        DestinationRow(name, destination.type, backlog.get(name, 0) if complete else None)
        for name, destination in sorted(relay.rules.destinations.items())
    ]


@bp.get("/")
def overview() -> ResponseReturnValue:
    relay = current_relay()
    return render_template(
        "console/overview.html",
        counts=event_counts(relay.store),
        ruleset=relay.rules,
        failure=getattr(relay.rules_holder, "failure", None),
        destinations=destination_rows(relay),
        backlog_scan=BACKLOG_SCAN,
    )
