"""The events pages: the search as filters (refreshing itself), and one event's page.

The search is :func:`relay.ops.search.search_events`, as for ``GET /api/events``; the
event page is :func:`relay.ops.history.event_history`, as for ``relay events show``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from relay.errors import QueryError
from relay.ops import audit, dead_letters, history
from relay.ops.reroute import reroute
from relay.ops.search import FILTERS, EventPage, parse_query, search_events
from relay.web import logins
from relay.web.console import session as sessions
from relay.web.console.access import admin_only, message
from relay.web.console.blueprint import bp
from relay.web.console.overview import NOTICE_MAX_AGE
from relay.web.context import current_relay

PAGE_SIZE = 50  #: events in one page
REFRESH_SECONDS = 5  #: how often the first page refreshes itself
CHOICES = {
    "kind": ("delivery_receipt", "inbound_message", "receipt_overdue"),
    "state": ("delivered", "pending", "dead", "unrouted"),
}


@bp.get("/events")
def events() -> ResponseReturnValue:
    page, error = _search()
    return render_template(
        "console/events.html",
        page=page,
        error=error,
        filters=_filters(),
        choices=CHOICES,
        cursor=request.args.get("cursor", ""),
        refresh=REFRESH_SECONDS,
        rules=current_relay().rules,
    ), (400 if error else 200)


@bp.get("/event-rows")
def event_rows() -> ResponseReturnValue:
    """The first page's rows alone, for the events page to refresh itself. A bad filter
    is answered as plain text: it echoes what the link said, which must never be markup."""
    page, error = _search()
    if error:
        return error, 400, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template("console/event_rows.html", page=page, filters=_filters())


@bp.get("/events/<path:ref>")
def event(ref: str) -> ResponseReturnValue:
    store, settings = current_relay().store, current_relay().settings
    found = history.event_history(store, ref)
    if not found:
        page = render_template("console/event.html", ref=ref, events=[])
        return page, 404
    for item in found:
        for delivery in item["deliveries"]:
            delivery["dead_letter"] = delivery["state"] == "dead_lettered" and (
                dead_letters.show_dead_letter(store, delivery["delivery_id"]) is not None
            )
        item["routing_dead_letter"] = item["routing"] == "dead_lettered"
    return render_template(
        "console/event.html",
        ref=ref,
        events=found,
        # what an action did, signed by it: a link cannot make the page claim one
        replayed=sessions.unseal(settings, request.args.get("replayed"), NOTICE_MAX_AGE),
        rerouted=sessions.unseal(settings, request.args.get("rerouted"), NOTICE_MAX_AGE),
        fields=_fields,
        pretty=_pretty,
    )


@bp.post("/events/<path:event_id>/reroute")
@admin_only("re-route events")
def event_reroute(event_id: str) -> ResponseReturnValue:
    """The stored event through the rules in force now, as a new routing."""
    relay = current_relay()
    report = reroute(relay.store, relay.celery, relay.rules, [event_id])
    if report.not_found:
        return message(404, "No such event", f"No stored event {event_id!r} (expired?).")
    audit.rerouted(logins.actor(), report)
    (done,) = report.rerouted
    sealed = sessions.seal(relay.settings, str(done.routing))
    return redirect(url_for("console.event", ref=event_id, rerouted=sealed), 303)


def _search() -> tuple[EventPage | None, str | None]:
    """The page the query string asks for, or what is wrong with it (naming the field)."""
    relay = current_relay()
    try:
        page = search_events(
            relay.store,
            parse_query(_filters()),
            cursor=request.args.get("cursor") or None,
            limit=PAGE_SIZE,
            pii=relay.settings.log_pii,
        )
    except QueryError as exc:
        return None, f"{exc.field}: {exc}"
    return page, None


def _filters() -> dict[str, str]:
    return {name: request.args.get(name, "").strip() for name in (*FILTERS, "since", "until")}


def _fields(event: dict[str, Any]) -> list[tuple[str, str]]:
    """The normalised event's fields as shown: everything but ``raw``, objects as JSON."""
    return [
        (name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        for name, value in event.items()
        if name != "raw"
    ]


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
