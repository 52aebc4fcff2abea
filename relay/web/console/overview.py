"""The overview page: event counts for the last hour and day, the rules in force, and a
table of the destinations.

:func:`destination_rows` is the one place the table's rows come from. Today it knows each
destination's name and type (from the rules) and its backlog (deliveries in the pending
outbox). Health per destination (state, success rate, p95 latency, last error, rate
limit, pause/resume) is not kept by this build: the page shows those columns only for
rows that have them, and never made up.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from flask import render_template
from flask.typing import ResponseReturnValue

from relay.ops.search import event_counts
from relay.web.console.blueprint import bp
from relay.web.context import Relay, current_relay

BACKLOG_SCAN = 10_000  #: outbox members read, at most, to count the backlog


_ROUTING_SUFFIX = re.compile(r"~\d+$")


@dataclass(frozen=True)
class DestinationRow:
    name: str
    type: str
    backlog: int | None  #: deliveries not yet settled; None when not counted in full
    dead_letters: int  #: dead letters kept for it now
    last_dead_reason: str | None  #: why the newest of them gave up
    last_dead_age: float | None  #: seconds since the newest of them was made


def destination_rows(relay: Relay, now: float | None = None) -> list[DestinationRow]:
    """One row per destination of the rules in force, by name."""
    now = time.time() if now is None else now
    backlog, complete = relay.store.pending.backlog(BACKLOG_SCAN)
    dead = _dead_letters(relay)
    rows = []
    for name, destination in sorted(relay.rules.destinations.items()):
        count, newest = dead.get(name, (0, None))
        record = relay.store.dead_letters.get(newest[0]) if newest else None
        rows.append(
            DestinationRow(
                name=name,
                type=destination.type,
                backlog=backlog.get(name, 0) if complete else None,
                dead_letters=count,
                last_dead_reason=record.get("reason") if record else None,
                last_dead_age=max(now - newest[1], 0.0) if newest and record else None,
            )
        )
    return rows


def _dead_letters(relay: Relay) -> dict[str, tuple[int, tuple[str, float] | None]]:
    """Per destination: how many dead letters, and the newest one's (id, stored time).
    From the ids alone (``<event id>:<destination>[~n]``): no record is read."""
    found: dict[str, tuple[int, tuple[str, float] | None]] = {}
    for did, stored in relay.store.dead_letters.scored():  # oldest first
        name = _ROUTING_SUFFIX.sub("", did.partition(":")[2])
        count, _ = found.get(name, (0, None))
        found[name] = (count + 1, (did, stored))
    return found


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
