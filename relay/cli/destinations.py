"""``relay destinations list|pause|resume``: the operator tools of ``relay.ops.destinations``.

``list`` shows the destinations of the rules file this command reads (``RELAY_RULES``);
``pause`` and ``resume`` check the name against the rules in force, as the web and worker
processes recorded them in Redis (no rules file needed), and read the rules file only when
none has yet. Their state is the one every worker shares in Redis. ``--json`` prints the
same shapes as ``/api/destinations``. An unknown name, a bad rules file, or Redis or the broker not
answering is one line on stderr and exit status 1.
"""

from __future__ import annotations

from collections.abc import Mapping

import click

from relay.cli.common import audit_actor, fail, infrastructure, settings_or_exit, store
from relay.cli.render import clip, echo_json, table
from relay.errors import ConfigError, UnknownDestinationError
from relay.logs import mask_data
from relay.ops import audit
from relay.ops import destinations as ops
from relay.rules import Destination
from relay.settings import Settings
from relay.state import Store
from relay.times import parse_duration


@click.group()
def destinations() -> None:
    """Destinations: their state (paused, circuit, backlog, recent success); pause, resume."""


@destinations.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def destinations_list(as_json: bool) -> None:
    """Every destination of the rules: state, backlog, last 5 minutes, last error."""
    settings = settings_or_exit(require_redis=True)
    known = _destinations(settings)
    with infrastructure():
        items = ops.list_destinations(store(settings), known)
    if as_json:  # phone numbers among blocked keys' values masked, as in `events list`
        found = [item.to_dict() for item in items]
        echo_json({"destinations": found if settings.log_pii else mask_data(found)})
    elif not items:
        click.echo("no destinations in the rules")
    else:
        click.echo(_table(items))


@destinations.command("pause")
@click.argument("name")
@click.option("--for", "duration", help="resume by itself after this long (e.g. 30m, 1h)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def destinations_pause(name: str, duration: str | None, as_json: bool) -> None:
    """Stop sending to NAME: its deliveries wait (no attempt spent) until resumed."""
    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
            if seconds <= 0:
                raise ValueError(f"--for must be longer than 0 (got {duration!r})")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--for") from None
    settings = settings_or_exit(require_redis=True)
    with infrastructure():
        redis = store(settings)
        known = _in_force(settings, redis)
        try:
            item = ops.pause(redis, known, name, seconds)
        except UnknownDestinationError as exc:
            fail(str(exc))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--for") from None
    audit.paused(audit_actor(), name, seconds)
    if as_json:
        echo_json(item.to_dict())
    else:
        until = f" until {item.paused_until}" if item.paused_until else " until resumed"
        click.echo(f"paused {name}{until} (backlog {item.backlog})")


@destinations.command("resume")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def destinations_resume(name: str, as_json: bool) -> None:
    """Send to NAME again: its waiting deliveries go out at once, at its rate limit."""
    from relay.ops.broker import make_celery  # start-up cost

    settings = settings_or_exit(require_redis=True)
    with infrastructure(), make_celery(settings) as celery:
        redis = store(settings)
        known = _in_force(settings, redis)
        try:
            report = ops.resume(redis, celery, known, name)
        except UnknownDestinationError as exc:
            fail(str(exc))
    audit.resumed(audit_actor(), name, report)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(
            f"resumed {name}: {report.republished} waiting deliveries sent again "
            f"(state {report.destination.state}, backlog {report.destination.backlog})"
        )


def _in_force(settings: Settings, store: Store) -> ops.Known:
    """The destinations of the rules in force as recorded in Redis; before any web or
    worker process has recorded them, those of the rules file (``RELAY_RULES``)."""
    found = ops.in_force(store)
    if found is not None:
        return found[1]
    why = "no web or worker process has recorded the rules in force in Redis yet"
    return _destinations(settings, f" ({why}, so RELAY_RULES was read)")


def _destinations(settings: Settings, note: str = "") -> Mapping[str, Destination]:
    from relay.ops.checks import load_ruleset  # start-up cost

    try:
        return load_ruleset(settings).destinations
    except (ConfigError, OSError) as exc:
        fail(f"cannot read the rules: {exc}{note}")


def _table(items: list[ops.DestinationStatus]) -> str:
    header = ("NAME", "TYPE", "STATE", "BACKLOG", "OK 5M", "P95 5M", "LIMITS", "LAST ERROR")
    return table(header, [_row(item) for item in items])


def _row(item: ops.DestinationStatus) -> tuple[str, ...]:
    state = item.state
    if item.state == "paused":
        state += f" until {item.paused_until}" if item.paused_until else " (until resumed)"
    if item.blocked_keys:
        state += f", {item.blocked_keys} key{'' if item.blocked_keys == 1 else 's'} blocked"
    rate = "-" if item.success_rate is None else f"{item.success_rate:.0%} of {item.attempts}"
    p95 = "-" if item.p95_seconds is None else f"{item.p95_seconds:g}s"
    limits: list[str] = []
    if item.rate_limit:
        limits.append(item.rate_limit)
    if item.concurrency:
        limits.append(f"≤{item.concurrency} at once")
    if item.circuit_breaker:
        limits.append(f"breaker {item.circuit_breaker}")
    if item.ordered_by:
        limits.append(f"ordered by {item.ordered_by}")
    return (
        item.name,
        item.type,
        state,
        str(item.backlog),
        rate,
        p95,
        ", ".join(limits) or "-",
        clip(item.last_error or "-"),
    )
