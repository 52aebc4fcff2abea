"""Pages of dead letters, read from their indexes (:mod:`relay.state.dead_letters`), never
by reading every record: ``GET /api/dead-letters``, the console's dead letters page and its
overview, ``relay dlq list``.

::

    page = page_dead_letters(store, DeadLetterFilter(destination="crm"), limit=500)
    page.items        # summaries, oldest first
    page.total        # how many match in all (counted in the index)
    page.next_cursor  # pass it back for the next page; None at the end

Only a page's records are read. The cursor is the position (stored time, id) of a page's
last dead letter: one stored meanwhile is newer than every one before it, so paging on
neither skips nor repeats one.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from relay.errors import CursorError
from relay.events import DeadLetter
from relay.state import Store
from relay.state.dead_letters import Position
from relay.state.keys import storable

DEFAULT_PAGE = 1000  #: dead letters in a page unless asked otherwise


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters: of ``destination``; stored at least ``older_than`` and at most
    ``newer_than`` seconds ago (each None: any)."""

    destination: str | None = None
    older_than: float | None = None
    newer_than: float | None = None

    def span(self, now: float, oldest_kept: float) -> tuple[float, float]:
        """The stored times (epoch seconds, both inclusive) the filter selects."""
        low = oldest_kept if self.newer_than is None else max(oldest_kept, now - self.newer_than)
        high = math.inf if self.older_than is None else now - self.older_than
        return low, high


@dataclass(frozen=True)
class DeadLetterPage:
    """Summaries oldest first, how many match in all, and the cursor of the next page
    (None: this is the last)."""

    items: list[dict[str, Any]]
    total: int
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"dead_letters": self.items, "total": self.total, "next_cursor": self.next_cursor}


def page_dead_letters(
    store: Store,
    which: DeadLetterFilter | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
    now: float | None = None,
) -> DeadLetterPage:
    """A page of at most ``limit`` dead-letter summaries that ``which`` selects, oldest
    first, after ``cursor`` (a page's ``next_cursor``). Read from the indexes: only the
    page's records are read. CursorError for a cursor this server did not give.

    The cursor is the position (stored time, id) of the page's last dead letter: one
    stored meanwhile is newer, so paging on neither skips nor repeats one."""
    now = time.time() if now is None else now
    which = which or DeadLetterFilter()
    after = _position(cursor) if cursor else None
    span = _span(store, which, now)
    if span is None:
        return DeadLetterPage([], 0, None)
    entries, total = store.dead_letters.page(which.destination, *span, after, limit + 1)
    shown = entries[:limit]
    records = store.dead_letters.get_many([did for _, did in shown])
    gone = [did for (_, did), record in zip(shown, records, strict=True) if record is None]
    store.dead_letters.forget(gone)  # past a retention made longer since it was stored
    items = [
        summary(record, now - stored)
        for (stored, _), record in zip(shown, records, strict=True)
        if record is not None
    ]
    more = len(entries) > limit
    return DeadLetterPage(items, total - len(gone), _cursor(shown[-1]) if more else None)


def matching_ids(
    store: Store,
    which: DeadLetterFilter | None = None,
    limit: int | None = None,
    now: float | None = None,
) -> tuple[list[str], int]:
    """The ids of the dead letters ``which`` selects, oldest first (at most ``limit``),
    and how many match in all; from the indexes alone, no record read."""
    now = time.time() if now is None else now
    which = which or DeadLetterFilter()
    span = _span(store, which, now)
    if span is None:
        return [], 0
    ids: list[str] = []
    after: Position | None = None
    total = 0
    while limit is None or len(ids) < limit:
        want = DEFAULT_PAGE if limit is None else min(DEFAULT_PAGE, limit - len(ids))
        entries, total = store.dead_letters.page(which.destination, *span, after, want)
        ids += [did for _, did in entries]
        if len(entries) < want:
            break
        after = entries[-1]
    return ids, total


@dataclass(frozen=True)
class DestinationDeadLetters:
    """A destination's dead letters: how many, and the newest one's reason and age."""

    count: int
    newest_reason: str | None
    newest_age: float | None


def by_destination(
    store: Store, names: Collection[str], now: float | None = None
) -> dict[str, DestinationDeadLetters]:
    """For each of ``names``: its dead letters, from the index (one count and the newest
    entry per destination, then only the newest records)."""
    now = time.time() if now is None else now
    names = [name for name in names if storable(name)]
    found = store.dead_letters.newest(names, store.dead_letters.window(now))
    newest = [top[1] for _, top in found if top is not None]
    records = dict(zip(newest, store.dead_letters.get_many(newest), strict=True))
    result = {}
    for name, (count, top) in zip(names, found, strict=True):
        record = records.get(top[1]) if top else None
        result[name] = DestinationDeadLetters(
            count=count,
            newest_reason=record.get("reason") if record else None,
            newest_age=max(now - top[0], 0.0) if top and record else None,
        )
    return result


def _span(store: Store, which: DeadLetterFilter, now: float) -> tuple[float, float] | None:
    """The stored times ``which`` selects; None when it can select nothing."""
    if which.destination is not None and not storable(which.destination):
        return None  # text no key can hold (a lone surrogate): no dead letter has it
    low, high = which.span(now, store.dead_letters.window(now))
    return (low, high) if low <= high else None


def _cursor(position: Position) -> str:
    """An opaque cursor: the position (stored time, id) of a page's last dead letter."""
    stored, did = position
    return base64.urlsafe_b64encode(f"{stored!r}:{did}".encode()).decode().rstrip("=")


def _position(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stored, _, did = raw.partition(":")
        score = float(stored)
        if not did or not storable(did) or not math.isfinite(score):
            raise ValueError
        return score, did
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise CursorError("not a cursor this server gave") from None


def summary(record: DeadLetter, age: float) -> dict[str, Any]:
    """One line's worth of a dead letter (``relay dlq list``)."""
    attempts = record.get("attempts") or []
    last: dict[str, Any] = dict(attempts[-1]) if attempts else {}
    event = record.get("event") or {}
    return {
        "id": record["id"],
        "event_id": event.get("id"),
        "kind": event.get("kind"),
        "route": record.get("route"),
        "destination": record.get("destination"),
        "attempts": len(attempts),
        "last_status": last.get("status"),
        "last_error": last.get("error") or record.get("reason"),
        "reason": record.get("reason"),
        "dead_at": record.get("dead_at"),
        "age_seconds": round(max(age, 0.0), 3),
    }
