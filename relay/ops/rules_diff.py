"""Rules diff against real traffic: what a candidate rules file would change for the
events relay received (``relay rules diff CANDIDATE.yaml``, ``POST /api/rules/diff``).

The stored events of a window (newest first, at most ``limit``; history keeps each one
``RELAY_HISTORY_TTL``) are matched against the rules in force and against the candidate.
Each event is matched as it was normalised from its raw payload when accepted — the
fields rules see. Matching is pure: nothing is sent, nothing is written. Events whose
routes or destinations differ are grouped by change, largest group first::

    12 events: failures → failures, crm-v2
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay.actions.registry import MASK
from relay.errors import RulesError
from relay.ops.checks import settings_checks
from relay.rules import Ruleset, load_rules_text
from relay.settings import Settings
from relay.state import Store
from relay.state import keys as state_keys

CANDIDATE = "candidate.yaml"  #: how errors name a candidate given as text
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
DEFAULT_SINCE = 86400.0  #: seconds back, unless asked otherwise
DEFAULT_LIMIT = 10_000  #: events examined at most, unless asked otherwise
MAX_LIMIT = 100_000
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
    complete: bool  #: False when ``limit`` stopped the walk before ``since``
    changes: tuple[Change, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "current_version": self.current_version,
            "candidate_version": self.candidate_version,
            "since": self.since,
            "examined": self.examined,
            "changed": self.changed,
            "complete": self.complete,
            "changes": [change.to_dict() for change in self.changes],
        }


def load_candidate(text: str, settings: Settings, env: Mapping[str, str] | None = None) -> Ruleset:
    """The candidate rules file in ``text`` (named :data:`CANDIDATE` in messages), with the
    settings checks. ``${VAR}`` takes the process's environment, as the file in force
    does; a RulesError lists every problem with the values of the variables the text
    names masked, so that a candidate cannot serve to read the environment."""
    env = os.environ if env is None else env
    try:
        return load_rules_text(text, CANDIDATE, env, settings_checks(settings))
    except RulesError as exc:
        values = {env.get(name, "") for name in _REFERENCE.findall(text)}
        hidden = sorted((value for value in values if len(value) >= 4), key=len, reverse=True)
        errors = []
        for line in exc.errors:
            for value in hidden:
                line = line.replace(value, MASK)
            errors.append(line)
        raise RulesError(errors) from None


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
) -> RulesDiff:
    """Match the events accepted in the last ``since`` seconds (the newest ``limit`` of
    them) against ``current`` and ``candidate``; the changes, largest group first."""
    now = time.time() if now is None else now
    oldest = now - since
    groups: dict[tuple[Routing, Routing], list[str]] = {}
    examined, complete = 0, True
    top: int | str = "+inf"
    after = ""
    bottom = max(store.index.cutoff(now), int(oldest * 1000))
    while True:
        want = min(_BATCH, limit - examined)
        if want <= 0:  # the limit is reached: it cut the window if an older event is left
            _, _, older = store.index.walk([state_keys.INDEX_ALL], top, bottom, after, 1)
            complete = not older
            break
        done, last, hits = store.index.walk([state_keys.INDEX_ALL], top, bottom, after, want)
        ids = [event_id for event_id, _ in hits]
        for event_id, event in zip(ids, store.events(ids), strict=True):
            if event is None:
                continue  # past the history TTL
            examined += 1
            before, then = routing_of(current, event), routing_of(candidate, event)
            if before != then:
                groups.setdefault((before, then), []).append(event_id)
        if done or last is None:
            break
        top, after = last
    changes = sorted(
        (
            Change(before, after_, len(ids), tuple(ids[:SAMPLE]))
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
        complete=complete,
        changes=tuple(changes),
    )
