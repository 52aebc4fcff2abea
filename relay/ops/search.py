"""Event search: filtered pages of events, newest first, from the indexes the worker keeps
(:mod:`relay.state.index`), never by scanning (``GET /api/events``, ``relay events list``).

::

    page = search_events(store, EventQuery(destination="crm", state="dead"), limit=50)
    page.items        # EventSummary, newest first
    page.next_cursor  # pass it back for the next (older) page; None at the end

Several filters intersect (:meth:`relay.state.index.EventIndex.page` walks the smallest of
their sets). The cursor is the position (accept time, id) of the last event a page covered:
events that arrive meanwhile are newer than it, so paging down neither skips nor repeats.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from relay.errors import QueryError
from relay.logs import mask_numbers
from relay.ops.history import event_label
from relay.state import Store
from relay.state.index import FACETS, STATES, normalize
from relay.times import parse_duration, parse_time

#: the filters of a search, as the API and the command name them
FILTERS = ("kind", "status", "code", "source", "route", "destination", "state", "keyword")
_RELATIVE = re.compile(r"\s*[\d.]+\s*(ms|s|m|h|d)\s*")
DEFAULT_LIMIT = 50  #: events in one page unless asked otherwise
MAX_LIMIT = 500  #: the largest page
#: what ``count_events`` counts besides the states: every event, or those retrying
COUNTABLE = ("accepted", "retrying", *STATES)
#: the windows of :func:`event_counts`, in seconds
WINDOWS = {"1h": 3600, "24h": 86400}


@dataclass(frozen=True)
class EventQuery:
    """What to look for; every filter given must hold. ``since`` (inclusive) and ``until``
    (exclusive) are epoch seconds of the events' accept time."""

    kind: str | None = None
    status: str | None = None
    code: str | None = None
    source: str | None = None
    route: str | None = None
    destination: str | None = None
    state: str | None = None
    keyword: str | None = None
    since: float | None = None
    until: float | None = None

    def facets(self) -> list[tuple[str, str]]:
        """The (facet, normalised value) filters given."""
        return [
            (name, normalize(name, value))
            for name in FACETS
            if (value := getattr(self, name)) is not None
        ]

    def check(self) -> None:
        """QueryError naming the first bad field."""
        for name in FACETS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise QueryError("must be a non-empty text", name)
        if self.state is not None and self.state not in STATES:
            raise QueryError(f"must be one of {', '.join(STATES)}", "state")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise QueryError("must be later than since", "until")


@dataclass(frozen=True)
class EventSummary:
    """One search result. Phone numbers are masked (last 4 digits) unless asked for whole,
    in every field: an inbound message's first word (``keyword``, ``summary``) may be one.

    ``number`` is a receipt's destination number; ``sender`` and ``recipient`` an inbound
    message's. ``routes`` and ``destinations`` are every routing's (a re-route adds its
    own); ``state`` is the search state (``pending``, ``delivered``, ``dead``,
    ``unrouted``)."""

    id: str
    accepted_at: str
    kind: str | None
    source: str | None
    summary: str
    status: str | None
    code: str | None
    keyword: str | None
    number: str | None
    sender: str | None
    recipient: str | None
    routes: tuple[str, ...]
    destinations: tuple[str, ...]
    state: str | None

    def to_dict(self) -> dict[str, Any]:
        value = asdict(self)
        value["routes"], value["destinations"] = list(self.routes), list(self.destinations)
        return value


@dataclass(frozen=True)
class EventPage:
    items: tuple[EventSummary, ...]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"events": [item.to_dict() for item in self.items], "next_cursor": self.next_cursor}


def search_events(
    store: Store,
    query: EventQuery,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
    *,
    pii: bool = False,
    now: float | None = None,
) -> EventPage:
    """A page of the events ``query`` finds, newest first, after ``cursor`` (a page's
    ``next_cursor``). ``pii``: phone numbers whole (``RELAY_LOG_PII``). QueryError for a
    bad query, cursor or limit."""
    query.check()
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"must be between 1 and {MAX_LIMIT}", "limit")
    try:
        found = store.index.page(
            dict(query.facets()), query.since, query.until, cursor, limit, now=now
        )
    except ValueError as exc:  # the facets are the query's own: only the cursor can be bad
        raise QueryError(str(exc), "cursor") from None
    return EventPage(tuple(_summaries(store, found.events, pii)), found.next_cursor)


def _summaries(store: Store, page: Sequence[tuple[str, float]], pii: bool) -> list[EventSummary]:
    ids = [event_id for event_id, _ in page]
    events = store.events(ids)
    tracks = store.index.tracks(ids)
    out = []
    for (event_id, accepted), event, track in zip(page, events, tracks, strict=True):
        if event is None:
            continue  # past the history TTL, not yet trimmed from the index
        out.append(
            EventSummary(
                id=event_id,
                accepted_at=event.get("received_at") or _iso(accepted),
                kind=event.get("kind"),
                source=event.get("source"),
                # an inbound message's first word may be a phone number
                summary=_masked(event_label(event), pii) or "",
                status=event.get("status"),
                code=event.get("code"),
                keyword=_masked(event.get("keyword"), pii),
                number=_phone(event.get("destination"), pii),
                sender=_phone(event.get("sender"), pii),
                recipient=_phone(event.get("recipient"), pii),
                routes=tuple(_names(track.get("@routes"))),
                destinations=tuple(_names(track.get("@destinations"))),
                state=track.get("@state"),
            )
        )
    return out


def count_events(
    store: Store,
    state: str | None = None,
    since: float | None = None,
    until: float | None = None,
    now: float | None = None,
) -> int:
    """How many events accepted from ``since`` (inclusive) to ``until`` (exclusive, default
    now + a minute of clock skew) are in ``state`` now: one of ``pending``, ``delivered``,
    ``dead``, ``unrouted``, or ``retrying`` (a retry scheduled); None or ``accepted``:
    every routed event."""
    if state not in (None, *COUNTABLE):
        raise QueryError(f"must be one of {', '.join(COUNTABLE)}", "state")
    if state == "retrying":
        return store.index.count_retrying(since, until, now)
    if state is None or state == "accepted":
        return store.index.count({}, since, until, now)
    return store.index.count({"state": state}, since, until, now)


def event_counts(store: Store, now: float | None = None) -> dict[str, dict[str, int]]:
    """For the console's overview: per window (``1h``, ``24h``), how many events were
    accepted (and routed) in it and how many of those are in each state now."""
    now = time.time() if now is None else now
    return {
        label: {name: count_events(store, name, since=now - seconds, now=now) for name in COUNTABLE}
        for label, seconds in WINDOWS.items()
    }


def parse_query(params: Mapping[str, str | None], now: float | None = None) -> EventQuery:
    """An :class:`EventQuery` from text parameters (the API's query string, the command's
    options); an empty or missing one is no filter. ``since`` and ``until``: an ISO 8601
    time, Unix seconds, or a duration back from now (``24h``, ``30m``). QueryError names
    the first bad one."""
    given = {name: value for name, value in params.items() if value}
    since, until = (
        parse_when(given[name], name, now) if name in given else None for name in ("since", "until")
    )
    query = EventQuery(
        kind=given.get("kind"),
        status=given.get("status"),
        code=given.get("code"),
        source=given.get("source"),
        route=given.get("route"),
        destination=given.get("destination"),
        state=given.get("state"),
        keyword=given.get("keyword"),
        since=since,
        until=until,
    )
    query.check()
    return query


def parse_limit(text: str | None) -> int:
    if text in (None, ""):
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{text!r} is not a whole number", "limit") from None
    if not 1 <= value <= MAX_LIMIT:
        raise QueryError(f"must be between 1 and {MAX_LIMIT}", "limit")
    return value


def parse_when(text: str, name: str, now: float | None = None) -> float:
    """Epoch seconds of ``text``: a duration back from ``now`` when it ends in a unit
    (``250ms``, ``2s``, ``10m``, ``24h``, ``7d``), else an ISO 8601 time or Unix seconds."""
    text = text.strip()
    if _RELATIVE.fullmatch(text):
        try:
            back = parse_duration(text)
        except ValueError as exc:
            raise QueryError(str(exc), name) from None
        return (time.time() if now is None else now) - back
    moment = parse_time(text)
    if moment is None:
        raise QueryError(
            f"{text!r} is not a time (ISO 8601, Unix seconds, or a duration back such as 24h)",
            name,
        )
    return moment.timestamp()


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _phone(value: object, pii: bool) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value if pii else mask_numbers(value)


def _masked(value: object, pii: bool) -> str | None:
    """Text with the phone numbers in it masked (unless ``pii``); None for no text."""
    if not isinstance(value, str):
        return None
    return value if pii else mask_numbers(value)


def _names(raw: str | None) -> list[str]:
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(name) for name in value] if isinstance(value, list) else []
