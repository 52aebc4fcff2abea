"""The dead letters page: filter by destination and age; replay or delete what is selected.

Bulk actions go through a confirmation page that says how many dead letters the action
will touch, and carries exactly those ids: what is confirmed is what is sent, whatever
arrives in between. The work itself is :mod:`relay.ops.dead_letters`, as for
``relay dlq`` and ``/api/dead-letters``.
"""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from relay.errors import CursorError
from relay.ops import audit, dead_letters
from relay.ops import dead_letter_pages as pages
from relay.times import parse_duration
from relay.web import logins
from relay.web.console import session as sessions
from relay.web.console.access import admin_only, message
from relay.web.console.blueprint import bp
from relay.web.context import current_relay

SHOWN = 200  #: dead letters listed on a page
MAX_BULK = 1000  #: dead letters one bulk action takes (the oldest first)
ACTIONS = {"replay": "Replay", "delete": "Delete"}


@bp.get("/dead-letters", endpoint="dead_letters")
def dead_letters_page() -> ResponseReturnValue:
    """A page of the dead letters the filter selects, oldest first; ``cursor``: the next
    page's (from the page before)."""
    which, errors = _filter(request.args)
    found = pages.DeadLetterPage([], 0, None)
    if which is not None:
        try:
            found = pages.page_dead_letters(
                current_relay().store, which, request.args.get("cursor") or None, SHOWN
            )
        except CursorError as exc:
            errors.append(f"cursor: {exc}")
    page = render_template(
        "console/dead_letters.html",
        items=found.items,
        total=found.total,
        next_cursor=found.next_cursor,
        paged="cursor" in request.args,
        filters=_filters(request.args),
        filter_args={name: value for name, value in _filters(request.args).items() if value},
        destinations=sorted(current_relay().rules.destinations),
        errors=errors,
        max_bulk=MAX_BULK,
    )
    return page, 400 if errors else 200


@bp.post("/dead-letters/bulk")
@admin_only("replay or delete dead letters")
def dead_letters_bulk() -> ResponseReturnValue:
    """The confirmation step: the selected ids (or every one matching the filter)."""
    action = request.form.get("action", "")
    if action not in ACTIONS:
        return message(400, "Unknown action", "action must be replay or delete.")
    if request.form.get("scope") == "matching":
        which, errors = _filter(request.form)
        if which is None:
            return message(400, "Bad filter", "; ".join(errors))
        ids, matched = pages.matching_ids(current_relay().store, which, MAX_BULK)
    else:
        ids = list(dict.fromkeys(request.form.getlist("ids")))
        matched = len(ids)
    if not ids:
        return message(400, "Nothing selected", "Select at least one dead letter.")
    if request.form.get("confirm") == "1":
        return _run(action, ids[:MAX_BULK])
    return render_template(
        "console/confirm.html",
        action=action,
        verb=ACTIONS[action],
        ids=ids[:MAX_BULK],
        matched=matched,
        max_bulk=MAX_BULK,
    )


@bp.post("/dead-letters/<path:delivery_id>/replay")
@admin_only("replay dead letters")
def dead_letter_replay(delivery_id: str) -> ResponseReturnValue:
    """One replay (the event page's button): back to where it was asked."""
    relay = current_relay()
    report = dead_letters.replay(relay.store, relay.celery, [delivery_id], relay.rules.destinations)
    if report.not_found:
        return message(
            404,
            "No such dead letter",
            f"No dead letter {delivery_id!r} (replayed or deleted meanwhile?).",
        )
    audit.replayed(logins.actor(), report)
    event = request.form.get("event")
    if event:
        sealed = sessions.seal(relay.settings, delivery_id)  # the event page shows it
        return redirect(url_for("console.event", ref=event, replayed=sealed), 303)
    return redirect(url_for("console.dead_letters"), 303)


def _run(action: str, ids: list[str]) -> ResponseReturnValue:
    relay = current_relay()
    if action == "replay":
        report = dead_letters.replay(relay.store, relay.celery, ids, relay.rules.destinations)
        done = [item["id"] for item in report.replayed]
        missing, warnings = report.not_found, report.warnings
        audit.replayed(logins.actor(), report)
    else:
        done = [
            did for did in ids if dead_letters.delete_dead_letter(relay.store, did, relay.celery)
        ]
        missing, warnings = [did for did in ids if did not in set(done)], []
        audit.deleted(logins.actor(), done, missing)
    return render_template(
        "console/bulk_done.html",
        verb={"replay": "Replayed", "delete": "Deleted"}[action],
        done=done,
        missing=missing,
        warnings=warnings,
    )


def _filter(values: Any) -> tuple[pages.DeadLetterFilter | None, list[str]]:
    """The filter of ``values`` (None when it is bad), and what is wrong with it (each
    naming its field)."""
    errors: list[str] = []
    older = _duration(values.get("older_than"), "older_than", errors)
    newer = _duration(values.get("newer_than"), "newer_than", errors)
    if errors:
        return None, errors
    destination = values.get("destination") or None
    return pages.DeadLetterFilter(destination, older, newer), errors


def _duration(raw: str | None, name: str, errors: list[str]) -> float | None:
    if not raw:
        return None
    try:
        return parse_duration(raw)
    except ValueError as exc:
        errors.append(f"{name}: {exc}")
        return None


def _filters(values: Any) -> dict[str, str]:
    return {name: values.get(name, "") for name in ("destination", "older_than", "newer_than")}
