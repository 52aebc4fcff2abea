"""``relay dlq …`` and ``relay events show|list|reroute``: the operator tools of ``relay.ops``.

``--json`` prints the same shapes as the admin API (``relay.web.api``). Redis or the broker
not answering is one line on stderr and exit status 1; so is an unknown id.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from kombu.exceptions import KombuError

from relay import logs, tracing
from relay.cli.common import load_rules_or_exit, settings_or_exit
from relay.errors import ConfigError, UnavailableError
from relay.events import Step, routing_mark
from relay.ops import audit, dead_letters, history, lifecycle
from relay.ops.dead_letters import ReplayReport
from relay.ops.search import DEFAULT_LIMIT, MAX_LIMIT, QueryError, parse_query, search_events
from relay.settings import Settings
from relay.state import RedisError, Store, open_store
from relay.state.index import STATES
from relay.times import format_duration, parse_duration

# The Celery app and the rules machinery are imported by the functions that use them
# ("start-up cost" below), so that `relay --help` and the other commands start quickly.

#: seconds a Redis call of an operator command may take
REDIS_TIMEOUT = 5.0
#: widest "last error" column in ``relay dlq list``
ERROR_WIDTH = 60
#: widest text an event brings into a heading (its keyword, its own time)
LABEL_WIDTH = 60


@click.group()
def dlq() -> None:
    """Dead letters: list, show, replay, delete, purge."""


@dlq.command("list")
@click.option("--destination", help="only dead letters of this destination")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def dlq_list(destination: str | None, as_json: bool) -> None:
    """Every dead letter, oldest first."""

    with _infrastructure():
        items = dead_letters.list_dead_letters(_store(), destination)
    if as_json:
        _echo_json({"dead_letters": items, "total": len(items)})
    elif not items:
        click.echo("no dead letters")
    else:
        click.echo(_table(items))


@dlq.command("show")
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def dlq_show(delivery_id: str, as_json: bool) -> None:
    """One dead letter: its event, route, destination and every attempt."""

    with _infrastructure():
        record = dead_letters.show_dead_letter(_store(), delivery_id)
    if record is None:
        _fail(f"no dead letter {delivery_id!r} (see `relay dlq list`)")
    if as_json:
        _echo_json(record)
    else:
        click.echo(_describe(record))


@dlq.command("replay")
@click.argument("delivery_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="every dead letter")
@click.option("--destination", help="with --all: only those of this destination")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def dlq_replay(
    delivery_ids: tuple[str, ...], replay_all: bool, destination: str | None, as_json: bool
) -> None:
    """Send dead letters again: same delivery id (webhook-id), a fresh retry budget.

    The destination is sent to as the worker's rules define it now; one that is no longer
    in them is dead-lettered again, saying so.
    """
    from relay.ops.broker import make_celery  # start-up cost

    if bool(delivery_ids) == replay_all:
        raise click.UsageError("give dead-letter ids or --all (not both)")
    if destination is not None and not replay_all:
        raise click.UsageError("--destination goes with --all")
    settings = settings_or_exit(require_redis=True)
    tracing.start("cli")  # each replay a new trace; exported as the command exits
    store = _store(settings)
    report = dead_letters.ReplayReport()
    with _infrastructure(), make_celery(settings) as celery:
        if replay_all:
            delivery_ids = tuple(
                item["id"] for item in dead_letters.list_dead_letters(store, destination)
            )
        known = _known_destinations(settings)
        for did in delivery_ids:  # one by one, so each is reported even if a later one fails
            one = dead_letters.replay(store, celery, [did], known)
            _merge(report, one, echo=not as_json)
        audit.replayed(audit_actor(), report)
    if as_json:
        _echo_json(report.to_dict())
    elif replay_all and not report.replayed:
        click.echo("nothing to replay")
    if report.not_found:
        sys.exit(1)


@dlq.command("delete")
@click.argument("delivery_ids", nargs=-1, required=True)
def dlq_delete(delivery_ids: tuple[str, ...]) -> None:
    """Remove dead letters without sending them (one that holds its key releases it: the
    key's next delivery is sent)."""
    from relay.ops.broker import make_celery  # start-up cost

    settings = settings_or_exit(require_redis=True)
    store = _store(settings)
    done: list[str] = []
    missing: list[str] = []
    with _infrastructure(), make_celery(settings) as celery:
        for did in delivery_ids:
            if dead_letters.delete_dead_letter(store, did, celery):
                click.echo(f"deleted {did}")
                done.append(did)
            else:
                click.echo(f"relay: no dead letter {did!r}", err=True)
                missing.append(did)
        audit.deleted(audit_actor(), done, missing)
    sys.exit(1 if missing else 0)


@dlq.command("purge")
@click.option("--older-than", help="only dead letters older than this (e.g. 7d, 12h)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def dlq_purge(older_than: str | None, as_json: bool) -> None:
    """Remove dead letters (all of them, or those older than --older-than)."""

    seconds = None
    if older_than is not None:
        try:
            seconds = parse_duration(older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
    from relay.ops.broker import make_celery  # start-up cost

    settings = settings_or_exit(require_redis=True)
    with _infrastructure(), make_celery(settings) as celery:
        count = dead_letters.purge(_store(settings), seconds, publisher=celery)
    audit.purged(audit_actor(), count, seconds)
    if as_json:
        _echo_json({"purged": count})
    else:
        which = f" older than {older_than}" if older_than else ""
        click.echo(f"purged {count} dead letter{'' if count == 1 else 's'}{which}")


@click.group()
def events() -> None:
    """Event history."""


@events.command("show")
@click.argument("ref", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def events_show(ref: str, as_json: bool) -> None:
    """The life of an event: ID is a relay event id, a transid (all its events) or a tid."""

    with _infrastructure():
        store = _store()
        found = history.event_history(store, ref)
        life = lifecycle.message_lifecycle(store, ref, found)  # ref is a transid
    if not found:
        _fail(f"no event with id, transid or tid {ref!r} (history is kept RELAY_HISTORY_TTL)")
    if as_json:
        _echo_json({"query": ref, "events": found, **({"lifecycle": life} if life else {})})
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
        with _infrastructure():
            page = search_events(_store(settings), query, cursor, limit, pii=settings.log_pii)
    except QueryError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.field}") from None
    if as_json:
        _echo_json(page.to_dict())
        return
    if not page.items:
        click.echo("no events")
    else:
        click.echo(_events_table([item.to_dict() for item in page.items]))
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
    store = _store(settings)
    report = RerouteReport()
    with _infrastructure(), make_celery(settings) as celery:
        for event_id in event_ids:  # one by one, so each is reported even if a later one fails
            one = reroute(store, celery, ruleset, [event_id])
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
        _echo_json(report.to_dict())
    if report.not_found:
        sys.exit(1)


# -- plumbing -------------------------------------------------------------------------------


def audit_actor() -> audit.Actor:
    """Who runs this command, for the audit log, whose lines go to stderr in relay's log
    format: a command configures no logging of its own."""
    logger = logging.getLogger(audit.log.name)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logs.formatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return audit.Actor.cli()


def _store(settings: Settings | None = None) -> Store:
    settings = settings or settings_or_exit(require_redis=True)
    return open_store(settings, timeout=REDIS_TIMEOUT)


@contextmanager
def _infrastructure() -> Iterator[None]:
    """Redis or the broker failing: one line and exit status 1, not a traceback."""
    try:
        yield
    except RedisError as exc:
        _fail(f"redis: {exc}")
    except UnavailableError as exc:  # replicas did not confirm a write in time
        _fail(str(exc))
    except (KombuError, OSError) as exc:
        _fail(f"broker: {exc}")


def _fail(message: str) -> NoReturn:
    click.echo(f"relay: {message}", err=True)
    sys.exit(1)


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _known_destinations(settings: Settings) -> frozenset[str] | None:
    """Destination names of the rules file this command sees, or None when it cannot load."""
    from relay.ops.checks import load_ruleset  # start-up cost

    try:
        return frozenset(load_ruleset(settings).destinations)
    except (ConfigError, OSError):
        return None


def _merge(report: ReplayReport, one: ReplayReport, echo: bool) -> None:
    report.replayed += one.replayed
    report.not_found += one.not_found
    report.warnings += one.warnings
    if not echo:
        return
    for item in one.replayed:
        target = item["destination"] or "routing"
        click.echo(f"replayed {item['id']} → {target} ({item['task']})")
    for did in one.not_found:
        click.echo(f"relay: no dead letter {did!r}", err=True)
    for warning in one.warnings:
        click.echo(f"relay: warning: {warning}", err=True)


# -- text output ----------------------------------------------------------------------------


def _table(items: list[dict[str, Any]]) -> str:
    header = ("ID", "AGE", "ROUTE", "DESTINATION", "ATTEMPTS", "LAST ERROR")
    rows = [
        (
            item["id"],
            format_age(item["age_seconds"]),
            item["route"] or "-",
            item["destination"] or "(routing)",
            str(item["attempts"]),
            _clip(item["last_error"] or ""),
        )
        for item in items
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*map(str.ljust, row[:-1], widths), row[-1]]).rstrip() for row in [header, *rows]
    ]
    return "\n".join(lines)


def _events_table(items: list[dict[str, Any]]) -> str:
    header = ("ID", "ACCEPTED", "KIND", "WHAT", "STATE", "DESTINATIONS")
    kinds = {"delivery_receipt": "receipt", "inbound_message": "inbound"}
    rows = [
        (
            item["id"],
            item["accepted_at"] or "",
            kinds.get(item["kind"] or "", item["kind"] or "-"),
            _clip(item["summary"] or "-", LABEL_WIDTH // 2),
            item["state"] or "-",
            ", ".join(item["destinations"]) or "-",
        )
        for item in items
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*map(str.ljust, row[:-1], widths), row[-1]]).rstrip() for row in [header, *rows]
    ]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    """Whitespace collapsed and control characters (a receiver's answer may hold terminal
    escapes) replaced, so that one record stays one line on the operator's screen."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _clip(text: str, width: int = ERROR_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters (the last one ``…``)."""
    text = _one_line(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_age(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: the largest whole unit."""
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _describe(record: dict[str, Any]) -> str:

    event = record.get("event") or {}
    retry = record.get("retry")
    lines = [
        f"dead letter  {record['id']}",
        f"event        {event.get('id')} {event.get('kind')} {_label(event)}".rstrip(),
        f"route        {record.get('route') or '-'}",
        f"destination  {record.get('destination') or '(routing)'}",
        f"dead since   {record.get('dead_at')} ({format_age(record.get('age_seconds'))} ago)",
        f"reason       {_one_line(str(record.get('reason')))}",
        f"rules        {record.get('rules_version')}",
    ]
    if retry:
        lines.append(
            f"retry        attempts {retry['attempts']},"
            f" initial {format_duration(retry['initial'])}, max {format_duration(retry['max'])}"
        )
    lines.append(f"attempts     {len(record.get('attempts') or [])}")
    for attempt in record.get("attempts") or []:
        lines.append("  " + _attempt_line(attempt, with_time=True))
    lines.append(f"replay with: relay dlq replay {record['id']}")
    return "\n".join(lines)


def _label(event: dict[str, Any]) -> str:
    return _clip(history.event_label(event), LABEL_WIDTH)


def _attempt_line(entry: dict[str, Any], with_time: bool = False) -> str:
    parts = [f"attempt {entry.get('attempt')}: {entry.get('outcome')}"]
    if entry.get("status") is not None:
        parts.append(f"status {entry['status']}")
    if entry.get("latency") is not None:
        millis = entry["latency"] * 1000
        parts.append(f"{millis:.0f} ms" if millis >= 1 else "<1 ms")
    text = ", ".join(parts)
    if entry.get("error"):
        text += f" — {_one_line(entry['error'])}"
    return f"{entry.get('at')}  {text}" if with_time else text


def format_timeline(item: dict[str, Any]) -> str:
    """A compact, human timeline of one ``relay.ops.history.timeline``."""

    head = [f"{item['id']} {item['kind']} {_clip(item['summary'], LABEL_WIDTH)}".rstrip()]
    head.append(f"source {item['source']}")
    event = item["event"]
    for name in ("transid", "tid"):
        if event.get(name):
            head.append(f"{name} {event[name]}")
    if item.get("timestamp"):  # the event's own time (a receipt's timeStamp)
        head.append(f"timestamp {_clip(str(item['timestamp']), LABEL_WIDTH)}")
    head.append(f"received {item['received_at']}")
    lines = [" · ".join(head)]
    day = (item["received_at"] or "")[:10]
    for entry in item["history"]:
        at = entry.get("at") or ""
        when = at[11:] if at[:10] == day else at
        lines.append(f"  {when:<13} {_one_line(_step_text(entry))}")
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
        Step.ATTEMPT: lambda: _attempt_line(entry),
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
