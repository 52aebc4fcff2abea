"""Rules diff against real traffic: what a candidate rules file would change for the
events relay received (``relay rules diff CANDIDATE.yaml``, ``POST /api/rules/diff``).

The stored events of a window (newest first, at most ``limit``; history keeps each one
``RELAY_HISTORY_TTL``) are matched against the rules in force and against the candidate.
Each event is matched as it was normalised from its raw payload when accepted — the
fields rules see. Matching is pure: nothing is sent, nothing is written. Events whose
routes or destinations differ are grouped by change, largest group first::

    12 events: failures → failures, crm-v2

A candidate is anyone's text (a console viewer's too), so it is held to what it can cost
and see: it is read without the environment (``${VAR}`` is ``<VAR>``, a default its
default: :data:`~relay.rules.interpolation.PLACEHOLDERS`), within :data:`CANDIDATE_LIMITS`;
and a diff given a ``budget`` of seconds answers with what it has when it runs out
(``truncated``). Route names the rules in force took from the environment show as ``****``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from relay.ops.checks import settings_checks
from relay.rules import Ruleset, load_rules_text
from relay.rules.interpolation import PLACEHOLDERS
from relay.rules.loader import Limits
from relay.rules.masking import hidden, hide
from relay.settings import Settings
from relay.state import Store

CANDIDATE = "candidate.yaml"  #: how errors name a candidate given as text
#: what a candidate may hold: 2 MiB of text (make bench's 10,000 routes are 1 MiB), the
#: 10,000 routes of the largest file relay is measured with, and 200,000 characters of
#: template text (compiling costs about 10 µs a character: 2 s)
CANDIDATE_LIMITS = Limits(size=2 * 1024 * 1024, routes=10_000, template_text=200_000)
DEFAULT_SINCE = 86400.0  #: seconds back, unless asked otherwise
DEFAULT_LIMIT = 10_000  #: events examined at most, unless asked otherwise
MAX_LIMIT = 100_000
WEB_BUDGET = 10.0  #: seconds a diff of the admin API or the console matches events for
SAMPLE = 20  #: event ids listed per group
_BATCH = 500  #: events read per round trip


@dataclass(frozen=True)
class Routing:
    """What a ruleset does with an event: the routes matched, the destinations reached."""

    routes: tuple[str, ...]
    destinations: tuple[str, ...]

    @property
    def label(self) -> str:
        return ", ".join(self.destinations) or "nothing"

    def to_dict(self) -> dict[str, Any]:
        return {"routes": list(self.routes), "destinations": list(self.destinations)}


@dataclass(frozen=True)
class Change:
    """Events that the current rules route one way and the candidate another."""

    before: Routing
    after: Routing
    count: int
    event_ids: tuple[str, ...]  #: the newest of them, at most SAMPLE

    @property
    def label(self) -> str:
        """``12 events: failures → failures, crm-v2`` (the routes too when only they
        differ)."""
        noun = "event" if self.count == 1 else "events"
        text = f"{self.count} {noun}: {self.before.label} → {self.after.label}"
        if self.before.destinations == self.after.destinations:
            before = ", ".join(self.before.routes) or "no route"
            after = ", ".join(self.after.routes) or "no route"
            text += f" (routes {before} → {after})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "count": self.count,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "event_ids": list(self.event_ids),
        }


@dataclass(frozen=True)
class RulesDiff:
    current_version: str
    candidate_version: str
    since: float  #: epoch seconds: the oldest accept time examined
    examined: int
    changed: int
    complete: bool  #: False when the limit or the budget stopped the walk before ``since``
    changes: tuple[Change, ...]
    truncated: bool = False  #: True when the budget ran out: the events examined till then

    def to_dict(self) -> dict[str, Any]:
        return {
            "current_version": self.current_version,
            "candidate_version": self.candidate_version,
            "since": self.since,
            "examined": self.examined,
            "changed": self.changed,
            "complete": self.complete,
            "truncated": self.truncated,
            "changes": [change.to_dict() for change in self.changes],
        }


def load_candidate(text: str, settings: Settings, label: str = CANDIDATE) -> Ruleset:
    """The candidate rules file in ``text`` (named ``label`` in messages), with the settings
    checks, read without the environment and within :data:`CANDIDATE_LIMITS`; RulesError
    lists every problem."""
    return load_rules_text(text, label, PLACEHOLDERS, settings_checks(settings), CANDIDATE_LIMITS)


def routing_of(ruleset: Ruleset, event: Mapping[str, Any]) -> Routing:
    matches = ruleset.match(event)
    return Routing(
        tuple(match.route for match in matches),
        tuple(name for match in matches for name in match.destinations),
    )


def diff_rules(
    store: Store,
    current: Ruleset,
    candidate: Ruleset,
    since: float = DEFAULT_SINCE,
    limit: int = DEFAULT_LIMIT,
    now: float | None = None,
    budget: float | None = None,
) -> RulesDiff:
    """Match the events accepted in the last ``since`` seconds (the newest ``limit`` of
    them) against ``current`` and ``candidate``; the changes, largest group first. With a
    ``budget`` (seconds), the events examined when it runs out (``truncated``)."""
    now = time.time() if now is None else now
    deadline = None if budget is None else time.monotonic() + budget
    oldest = now - since
    groups: dict[tuple[Routing, Routing], list[str]] = {}
    examined, complete, truncated = 0, True, False
    cursor: str | None = None
    while True:
        want = min(_BATCH, limit - examined)
        if want <= 0:  # the limit is reached: it cut the window if an older event is left
            complete = cursor is None
            break
        page = store.index.page({}, since=oldest, cursor=cursor, limit=want, now=now)
        ids = page.ids
        for event_id, event in zip(ids, store.events(ids), strict=True):
            if deadline is not None and time.monotonic() >= deadline:
                truncated = True
                break
            if event is None:
                continue  # past the history TTL
            examined += 1
            before, then = routing_of(current, event), routing_of(candidate, event)
            if before != then:
                groups.setdefault((before, then), []).append(event_id)
        cursor = page.next_cursor
        if truncated or cursor is None:
            break
    forms = hidden(current.interpolated)
    changes = sorted(
        (
            Change(_hidden(before, forms), after_, len(ids), tuple(ids[:SAMPLE]))
            for (before, after_), ids in groups.items()
        ),
        key=lambda change: (-change.count, change.label),
    )
    return RulesDiff(
        current_version=current.version,
        candidate_version=candidate.version,
        since=oldest,
        examined=examined,
        changed=sum(change.count for change in changes),
        complete=complete and not truncated,
        changes=tuple(changes),
        truncated=truncated,
    )


def _hidden(routing: Routing, forms: Collection[str]) -> Routing:
    """``routing`` with the values of the environment in its route names hidden."""
    return replace(routing, routes=tuple(hide(name, forms) for name in routing.routes))
