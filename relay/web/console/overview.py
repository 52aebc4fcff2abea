"""The overview page: event counts for the last hour and day, delivery health
(:mod:`relay.ops.health`), the rules in force, and a table of the destinations, with pause
and resume for admins.

:func:`destination_rows` is the one place the table's rows come from: each destination's
status as :func:`relay.ops.destinations.list_destinations` reports it (to
``relay destinations list`` and ``/api/destinations`` too: state, backlog, success rate
and p95 over the last 5 minutes, last error, limits), with its dead letters merged in.
Pause and resume are :func:`relay.ops.destinations.pause` and ``resume``; what they did
comes back to the overview as a signed notice (:func:`relay.web.console.session.seal`),
so a link cannot make the page claim something that did not happen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from relay.errors import UnknownDestinationError
from relay.ops import audit
from relay.ops import destinations as ops
from relay.ops.dead_letter_pages import DestinationDeadLetters, by_destination
from relay.ops.health import delivery_health
from relay.ops.search import event_counts
from relay.times import epoch, format_duration, parse_duration
from relay.web import logins
from relay.web.console import session as sessions
from relay.web.console.access import admin_only, message
from relay.web.console.blueprint import bp, utc
from relay.web.context import Relay, current_relay

NOTICE_MAX_AGE = 120  #: seconds a pause's or resume's notice is shown after it


@dataclass(frozen=True)
class DestinationRow:
    status: ops.DestinationStatus  #: as ``relay destinations list`` reports it
    paused_left: float | None  #: seconds until a timed pause ends by itself
    last_error_age: float | None  #: seconds since ``status.last_error``
    dead_letters: int  #: dead letters kept for it now
    last_dead_reason: str | None  #: why the newest of them gave up
    last_dead_age: float | None  #: seconds since the newest of them was made

    @property
    def name(self) -> str:
        return self.status.name


def destination_rows(relay: Relay, now: float | None = None) -> list[DestinationRow]:
    """One row per destination of the rules in force, by name."""
    now = time.time() if now is None else now
    dead = by_destination(relay.store, relay.rules.destinations, now)
    rows = []
    for status in ops.list_destinations(relay.store, relay.rules.destinations):
        mine = dead.get(status.name, DestinationDeadLetters(0, None, None))
        rows.append(
            DestinationRow(
                status=status,
                paused_left=_seconds_until(status.paused_until, now),
                last_error_age=_seconds_since(status.last_error_at, now),
                dead_letters=mine.count,
                last_dead_reason=mine.newest_reason,
                last_dead_age=mine.newest_age,
            )
        )
    return rows


def _epoch(stamp: str | None) -> float | None:
    return epoch(stamp) if stamp else None


def _seconds_until(stamp: str | None, now: float) -> float | None:
    at = _epoch(stamp)
    return None if at is None else max(at - now, 0.0)


def _seconds_since(stamp: str | None, now: float) -> float | None:
    at = _epoch(stamp)
    return None if at is None else max(now - at, 0.0)


@bp.get("/")
def overview() -> ResponseReturnValue:
    relay = current_relay()
    done = sessions.unseal(relay.settings, request.args.get("done"), NOTICE_MAX_AGE)
    return render_template(
        "console/overview.html",
        counts=event_counts(relay.store),
        health=delivery_health(relay.store),
        ruleset=relay.rules,
        failure=getattr(relay.rules_holder, "failure", None),
        destinations=destination_rows(relay),
        notices=[("ok", done)] if done else [],
    )


# -- pause and resume ---------------------------------------------------------------------------


@bp.post("/destinations/<path:name>/pause")
@admin_only("pause or resume destinations")
def destination_pause(name: str) -> ResponseReturnValue:
    """Form field ``for`` (optional): a duration (``30m``, ``1h``) after which the pause
    ends by itself; empty: until resumed."""
    relay = current_relay()
    raw = request.form.get("for", "").strip()
    try:
        seconds = parse_duration(raw) if raw else None
        if seconds is not None and not 0 < seconds <= ops.MAX_PAUSE:
            limit = format_duration(ops.MAX_PAUSE)
            raise ValueError(f"bad duration {raw!r} (more than 0 and at most {limit})")
        status = ops.pause(relay.store, relay.rules.destinations, name, seconds)
    except UnknownDestinationError as exc:
        return message(404, "No such destination", f"{exc}.")
    except ValueError as exc:
        return message(400, "Bad duration", f"for: {exc}")
    audit.paused(logins.actor(), name, seconds)
    until = f"for {format_duration(seconds)}, until {utc(status.paused_until)}" if seconds else ""
    return _back(relay, f"{name} paused {until or 'until resumed'}.")


@bp.post("/destinations/<path:name>/resume")
@admin_only("pause or resume destinations")
def destination_resume(name: str) -> ResponseReturnValue:
    relay = current_relay()
    try:
        report = ops.resume(relay.store, relay.celery, relay.rules.destinations, name)
    except UnknownDestinationError as exc:
        return message(404, "No such destination", f"{exc}.")
    audit.resumed(logins.actor(), name, report)
    sent = report.republished
    waiting = "1 waiting delivery" if sent == 1 else f"{sent} waiting deliveries"
    return _back(relay, f"{name} resumed: {waiting} sent again.")


def _back(relay: Relay, text: str) -> ResponseReturnValue:
    sealed = sessions.seal(relay.settings, text)
    return redirect(url_for("console.overview", done=sealed), 303)
