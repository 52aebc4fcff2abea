"""``relay events show|list|reroute``: an event's history, search and re-routing
(``relay.ops.history``, ``relay.ops.search``, ``relay.ops.reroute``).

``--json`` prints the same shapes as the admin API (``relay.web.api``). Redis or the broker
not answering is one line on stderr and exit status 1; so is an unknown id.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from relay import tracing
from relay.cli.common import (
    audit_actor,
    fail,
    infrastructure,
    load_rules_or_exit,
    settings_or_exit,
    store,
)
from relay.cli.render import LABEL_WIDTH, attempt_line, clip, echo_json, one_line, table
from relay.errors import QueryError
from relay.events import Step, routing_mark
from relay.ops import audit, history, lifecycle
from relay.ops.search import DEFAULT_LIMIT, MAX_LIMIT, parse_query, search_events
from relay.state.index import STATES

# The Celery app and the rules machinery are imported by the functions that use them
# ("start-up cost" below), so that `relay --help` and the other commands start quickly.


@click.group()
def events() -> None:
    """Event history."""


@events.command("show")
@click.argument("ref", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def events_show(ref: str, as_json: bool) -> None:
    """The life of an event: ID is a relay event id, a transid (all its events) or a tid."""

    with infrastructure():
        state = store()
        found = history.event_history(state, ref)
        life = lifecycle.message_lifecycle(state, ref, found)  # ref is a transid
    if not found:
        fail(f"no event with id, transid or tid {ref!r} (history is kept RELAY_HISTORY_TTL)")
    if as_json:
        echo_json({"query": ref, "events": found, **({"lifecycle": life} if life else {})})
    else:
        shown = ([lifecycle.format_lifecycle(life)] if life else []) + [
            format_timeline(item) for item in found
        ]
        click.echo("\n\n".join(shown))


@events.command("list")
@click.option("--kind", help="delivery_receipt or inbound_message")
@click.option("--status", help="a receipt's status (as rules compare it: failed = Failed)")
@click.option("--code", help="a receipt's code")
@click.option("--source", help="the URL's <source>")
@click.option("--route", help="a route the event matched")
@click.option("--destination", help="a destination it was routed to")
@click.option("--state", type=click.Choice(STATES), help="what became of its deliveries")
@click.option("--keyword", help="an inbound message's first word")
@click.option("--since", help="accepted at or after: 1h, 24h, an ISO 8601 time, Unix seconds")
@click.option("--until", help="accepted before (the same forms)")
@click.option(
    "--limit", type=click.IntRange(1, MAX_LIMIT), default=DEFAULT_LIMIT, show_default=True
)
@click.option("--cursor", help="the next page: the cursor a previous page printed")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def events_list(limit: int, cursor: str | None, as_json: bool, **filters: str | None) -> None:
    """Events newest first, filtered (every filter given must hold).

    Backed by indexes the worker keeps (history is kept RELAY_HISTORY_TTL); phone numbers
    are masked unless RELAY_LOG_PII=1.
    """
    settings = settings_or_exit(require_redis=True)
    try:
        query = parse_query(filters)
        with infrastructure():
            page = search_events(store(settings), query, cursor, limit, pii=settings.log_pii)
    except QueryError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.field}") from None
    if as_json:
        echo_json(page.to_dict())
        return
    if not page.items:
        click.echo("no events")
    else:
        click.echo(_table([item.to_dict() for item in page.items]))
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


@events.command("reroute")
@click.argument("event_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def events_reroute(event_ids: tuple[str, ...], as_json: bool) -> None:
    """Route stored events again through the rules file in force (RELAY_RULES) as new
    routings with new deliveries; their history shows both. Exit 1 if an id is unknown.
    """
    from relay.ops.broker import make_celery  # start-up cost
    from relay.ops.reroute import RerouteReport, reroute

    settings = settings_or_exit(require_redis=True)
    ruleset = load_rules_or_exit(settings, settings.rules_path)
    tracing.start("cli")  # each re-route a new trace; exported as the command exits
    found = store(settings)
    report = RerouteReport()
    with infrastructure(), make_celery(settings) as celery:
        for event_id in event_ids:  # one by one, so each is reported even if a later one fails
            one = reroute(found, celery, ruleset, [event_id])
            report.rerouted += one.rerouted
            report.not_found += one.not_found
            if as_json:
                continue
            for item in one.rerouted:
                targets = ", ".join(item.destinations) or "nothing (no route matched)"
                click.echo(f"re-routed {item.event_id} (routing {item.routing}) → {targets}")
            for missing in one.not_found:
                click.echo(f"relay: no event {missing!r}", err=True)
        audit.rerouted(audit_actor(), report)
    if as_json:
        echo_json(report.to_dict())
    if report.not_found:
        sys.exit(1)


# -- text output ----------------------------------------------------------------------------


def _table(items: list[dict[str, Any]]) -> str:
    header = ("ID", "ACCEPTED", "KIND", "WHAT", "STATE", "DESTINATIONS")
    kinds = {"delivery_receipt": "receipt", "inbound_message": "inbound"}
    rows = [
        (
            item["id"],
            item["accepted_at"] or "",
            kinds.get(item["kind"] or "", item["kind"] or "-"),
            clip(item["summary"] or "-", LABEL_WIDTH // 2),
            item["state"] or "-",
            ", ".join(item["destinations"]) or "-",
        )
        for item in items
    ]
    return table(header, rows)


def format_timeline(item: dict[str, Any]) -> str:
    """A compact, human timeline of one ``relay.ops.history.timeline``."""

    head = [f"{item['id']} {item['kind']} {clip(item['summary'], LABEL_WIDTH)}".rstrip()]
    head.append(f"source {item['source']}")
    event = item["event"]
    for name in ("transid", "tid"):
        if event.get(name):
            head.append(f"{name} {event[name]}")
    if item.get("timestamp"):  # the event's own time (a receipt's timeStamp)
        head.append(f"timestamp {clip(str(item['timestamp']), LABEL_WIDTH)}")
    head.append(f"received {item['received_at']}")
    lines = [" · ".join(head)]
    day = (item["received_at"] or "")[:10]
    for entry in item["history"]:
        at = entry.get("at") or ""
        when = at[11:] if at[:10] == day else at
        lines.append(f"  {when:<13} {one_line(_step_text(entry))}")
    lines.append(f"  final: {_final(item)}")
    return "\n".join(lines)


def _destination(item: dict[str, Any]) -> str | None:
    """A delivery's destination, with the re-route it belongs to (``hook (re-route 2)``):
    a re-routed event has a delivery per routing to the same destination."""
    name = item.get("destination")
    _, routing = routing_mark(str(item.get("delivery_id") or "").partition(":")[2])
    return f"{name} (re-route {routing})" if name and routing > 1 else name


def _step_text(entry: dict[str, Any]) -> str:
    step = entry.get("step")
    who = _destination(entry)
    if step == Step.RECEIVED:
        return f"received (rules {entry.get('rules_version')})"
    if step == Step.ROUTED:
        routes = ", ".join(entry.get("routes", []))
        return f"routed: {routes} → {', '.join(entry.get('destinations', []))}"
    if step == Step.UNROUTED:
        return "unrouted: no route matched"
    if step == Step.REROUTED:
        routes = ", ".join(entry.get("routes", [])) or "no route matched"
        targets = ", ".join(entry.get("destinations", [])) or "nothing"
        return f"re-routed (rules {entry.get('rules_version')}): {routes} → {targets}"
    if step == Step.DEAD_LETTERED and "delivery_id" not in entry:
        return f"routing failed, dead-lettered: {entry.get('reason')}"
    texts: dict[Step, Callable[[], str]] = {
        Step.ATTEMPT: lambda: attempt_line(entry),
        Step.RETRY_SCHEDULED: lambda: f"retry in {entry.get('delay')}s",
        Step.DELIVERED: lambda: "delivered",
        Step.DEAD_LETTERED: lambda: f"dead-lettered: {entry.get('reason')}",
        Step.SKIPPED: lambda: f"skipped: {entry.get('reason')}",
        Step.REPLAYED: lambda: "replayed",
        Step.REPLAY_FAILED: lambda: f"replay failed: {entry.get('reason')}",
        Step.FALLBACK: lambda: f"fallback for {entry.get('fallback_of')}: {entry.get('reason')}",
    }
    if step in texts:
        return f"{who or '(routing)'}  {texts[Step(step)]()}"
    rest = {key: value for key, value in entry.items() if key not in ("at", "step")}
    return f"{step} {json.dumps(rest, ensure_ascii=False)}"


def _final(item: dict[str, Any]) -> str:
    if item["routing"] != "routed":
        reason = f" ({item['routing_error']})" if item["routing_error"] else ""
        return f"{item['routing']}{reason}"
    states = [
        f"{_destination(d)} {d['state']}" + (f" ({d['waiting']})" if d.get("waiting") else "")
        for d in item["deliveries"]
    ]
    return ", ".join(states) or "routed to no destination"
