"""The audit log: one line for every operator action that changes what relay does —
pause, resume, replay, delete, purge, re-route — and for every rules diff, whichever way
it was asked for (the console, the admin API, the ``relay`` command).

Each line is logged on ``relay.audit`` at INFO, with its parts as structured fields (JSON
keys, or ``key=value`` on the console; :mod:`relay.logs`):

- who: ``role`` (``admin`` or ``viewer`` for a login, ``cli`` for a command), ``via``
  (``console``, ``api`` or ``cli``), and ``client`` (the address of a web request) or
  ``user`` (the OS user who ran the command);
- what: ``action`` (``pause``, ``resume``, ``replay``, ``delete``, ``purge``,
  ``reroute``, ``rules_diff``), with ``destination``, ``ids`` (dead-letter or event ids)
  and ``count`` where they apply.

A line says what was done: ids that were not found are counted in its message, not
listed as done. :func:`record` writes one; the others shape it from an action's report,
so that each call site is one line.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.times import format_duration

if TYPE_CHECKING:
    from relay.ops.dead_letters import ReplayReport
    from relay.ops.destinations import Resumed
    from relay.ops.reroute import RerouteReport
    from relay.ops.rules_diff import RulesDiff

log = logging.getLogger("relay.audit")


@dataclass(frozen=True)
class Actor:
    """Who asked: a role logged in from an address, or an OS user at the command line."""

    role: str  #: ``admin``, ``viewer`` or ``cli``
    via: str  #: ``console``, ``api`` or ``cli``
    client: str | None = None  #: the address of a web request
    user: str | None = None  #: the OS user of a command

    @classmethod
    def cli(cls) -> Actor:
        """Whoever runs this ``relay`` command."""
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no login name and no passwd entry (some containers)
            user = "unknown"
        return cls("cli", "cli", user=user)

    def __str__(self) -> str:
        if self.role == "cli":
            return f"cli user {self.user}"
        return f"{self.role} at {self.client} ({self.via})"


def record(
    actor: Actor,
    action: str,
    what: str,
    *,
    destination: str | None = None,
    ids: Sequence[str] = (),
    count: int | None = None,
) -> None:
    """One audit line: ``<actor>: <action> <what>`` and the fields."""
    fields = {
        "action": action,
        "role": actor.role,
        "via": actor.via,
        "client": actor.client,
        "user": actor.user,
        "destination": destination,
        "ids": list(ids) if ids else None,
        "count": count,
    }
    log.info("%s: %s %s", actor, action, what, extra=fields)


def paused(actor: Actor, name: str, seconds: float | None) -> None:
    length = f"for {format_duration(seconds)}" if seconds else "until resumed"
    record(actor, "pause", f"{name} {length}", destination=name)


def resumed(actor: Actor, name: str, report: Resumed) -> None:
    sent = report.republished
    record(actor, "resume", f"{name}: {sent} waiting sent again", destination=name, count=sent)


def replayed(actor: Actor, report: ReplayReport) -> None:
    done = [str(item["id"]) for item in report.replayed]
    record(actor, "replay", _dead_letters(done, report.not_found), ids=done, count=len(done))


def deleted(actor: Actor, done: Sequence[str], missing: Sequence[str] = ()) -> None:
    record(actor, "delete", _dead_letters(done, missing), ids=done, count=len(done))


def purged(actor: Actor, count: int, older_than: float | None) -> None:
    which = f" older than {format_duration(older_than)}" if older_than is not None else ""
    record(actor, "purge", f"{count} dead letter(s){which}", count=count)


def rerouted(actor: Actor, report: RerouteReport) -> None:
    done = [item.event_id for item in report.rerouted]
    deliveries = sum(len(item.delivery_ids) for item in report.rerouted)
    what = f"{len(done)} event(s) as {deliveries} new deliveries"
    if report.not_found:
        what += f" ({len(report.not_found)} not found)"
    record(actor, "reroute", what, ids=done, count=len(done))


def diffed(actor: Actor, result: RulesDiff) -> None:
    what = (
        f"{result.current_version} → {result.candidate_version}: {result.changed} of "
        f"{result.examined} event(s) would change"
    )
    record(actor, "rules_diff", what, count=result.examined)


def _dead_letters(done: Sequence[str], missing: Sequence[str]) -> str:
    what = f"{len(done)} dead letter(s)"
    return what + (f" ({len(missing)} not found)" if missing else "")
