"""``relay dlq list|show|replay|delete|purge``: the dead letters of ``relay.ops.dead_letters``.

``--json`` prints the same shapes as the admin API (``relay.web.api``). Redis or the broker
not answering is one line on stderr and exit status 1; so is an unknown id.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from relay import tracing
from relay.cli.common import audit_actor, fail, infrastructure, settings_or_exit, store
from relay.cli.render import LABEL_WIDTH, attempt_line, clip, echo_json, one_line, table
from relay.errors import ConfigError
from relay.ops import audit, dead_letters, history
from relay.ops.dead_letters import ReplayReport
from relay.settings import Settings
from relay.times import format_age, format_duration, parse_duration

# The Celery app and the rules machinery are imported by the functions that use them
# ("start-up cost" below), so that `relay --help` and the other commands start quickly.


@click.group()
def dlq() -> None:
    """Dead letters: list, show, replay, delete, purge."""


@dlq.command("list")
@click.option("--destination", help="only dead letters of this destination")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def dlq_list(destination: str | None, as_json: bool) -> None:
    """Every dead letter, oldest first."""

    with infrastructure():
        items = dead_letters.list_dead_letters(store(), destination)
    if as_json:
        echo_json({"dead_letters": items, "total": len(items)})
    elif not items:
        click.echo("no dead letters")
    else:
        click.echo(_table(items))


@dlq.command("show")
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def dlq_show(delivery_id: str, as_json: bool) -> None:
    """One dead letter: its event, route, destination and every attempt."""

    with infrastructure():
        record = dead_letters.show_dead_letter(store(), delivery_id)
    if record is None:
        fail(f"no dead letter {delivery_id!r} (see `relay dlq list`)")
    if as_json:
        echo_json(record)
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
    found = store(settings)
    report = dead_letters.ReplayReport()
    with infrastructure(), make_celery(settings) as celery:
        if replay_all:
            delivery_ids = tuple(
                item["id"] for item in dead_letters.list_dead_letters(found, destination)
            )
        known = _known_destinations(settings)
        for did in delivery_ids:  # one by one, so each is reported even if a later one fails
            one = dead_letters.replay(found, celery, [did], known)
            _merge(report, one, echo=not as_json)
        audit.replayed(audit_actor(), report)
    if as_json:
        echo_json(report.to_dict())
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
    found = store(settings)
    done: list[str] = []
    missing: list[str] = []
    with infrastructure(), make_celery(settings) as celery:
        for did in delivery_ids:
            if dead_letters.delete_dead_letter(found, did, celery):
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
    with infrastructure(), make_celery(settings) as celery:
        count = dead_letters.purge(store(settings), seconds, publisher=celery)
    audit.purged(audit_actor(), count, seconds)
    if as_json:
        echo_json({"purged": count})
    else:
        which = f" older than {older_than}" if older_than else ""
        click.echo(f"purged {count} dead letter{'' if count == 1 else 's'}{which}")


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
            _age(item["age_seconds"]),
            item["route"] or "-",
            item["destination"] or "(routing)",
            str(item["attempts"]),
            clip(item["last_error"] or ""),
        )
        for item in items
    ]
    return table(header, rows)


def _age(seconds: float | None) -> str:
    return "?" if seconds is None else format_age(seconds)


def _describe(record: dict[str, Any]) -> str:
    event = record.get("event") or {}
    retry = record.get("retry")
    label = clip(history.event_label(event), LABEL_WIDTH)
    lines = [
        f"dead letter  {record['id']}",
        f"event        {event.get('id')} {event.get('kind')} {label}".rstrip(),
        f"route        {record.get('route') or '-'}",
        f"destination  {record.get('destination') or '(routing)'}",
        f"dead since   {record.get('dead_at')} ({_age(record.get('age_seconds'))} ago)",
        f"reason       {one_line(str(record.get('reason')))}",
        f"rules        {record.get('rules_version')}",
    ]
    if retry:
        lines.append(
            f"retry        attempts {retry['attempts']},"
            f" initial {format_duration(retry['initial'])}, max {format_duration(retry['max'])}"
        )
    lines.append(f"attempts     {len(record.get('attempts') or [])}")
    for attempt in record.get("attempts") or []:
        lines.append("  " + attempt_line(attempt, with_time=True))
    lines.append(f"replay with: relay dlq replay {record['id']}")
    return "\n".join(lines)
