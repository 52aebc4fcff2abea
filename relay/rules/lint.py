"""Warnings about a rules file that loads but probably does not do what was meant.

:func:`lint` is pure: it reads the loaded :class:`Ruleset` (``Route.match`` as written) and
reports, each as ``PATH:LINE: where: warning: message``:

- a route that never matches because an earlier route without ``continue`` matches every
  event (no ``match`` or ``match: {}``) or has a ``match`` whose entries are a subset of its
  own (the same mapping included) — only these, so that there are no false alarms;
- a default that is never used because a route matches every event;
- a destination no route (nor the default) sends to, that is no other destination's
  fallback and that no notification sends to;
- a ``code`` compared by equality (a value, a list, ``equals``, ``in``, ``not``) with a
  value missing from the status-code table (:data:`relay.codes.CODE_DESCRIPTIONS`);
- a ``status`` compared by equality with a value Webex Connect never sends
  (:data:`relay.codes.STATUSES`, compared as the matcher does: ``undelivered`` is fine);
- an http ``body`` of JSON (:func:`~relay.rules.payloads.json_required`) or Slack
  ``blocks`` written as one template string with a ``{{ … }}`` not passed through
  ``tojson``: event data there can add keys or break the JSON (the structured form cannot).

Lines come from ``line(path)`` (see :func:`lines_of`); without it, a warning inside a route
is reported at the route's line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from relay.codes import CODE_DESCRIPTIONS, STATUSES, normalize_status
from relay.rules.document import Path, Problems, format_path, parse
from relay.rules.fields import as_text
from relay.rules.loader import gc_paused
from relay.rules.matcher import COMBINATORS
from relay.rules.model import HttpDestination, Route, Ruleset, SlackDestination
from relay.rules.payloads import json_required
from relay.rules.templates import Template, outputs_outside_tojson

Lines = Callable[[Path], int]
_MAX_SUBSET_ENTRIES = 10  #: entries; a longer match is compared with each earlier one
_STATUS_FORMS = {normalize_status(status): status for status in STATUSES}


@dataclass(frozen=True)
class LintWarning:
    """One warning: its ``line``, ``where`` (a path such as ``routes[3]``) and ``message``."""

    line: int
    where: str
    message: str

    def format(self, label: str) -> str:
        return f"{label}:{self.line}: {self.where}: warning: {self.message}"


def lint(ruleset: Ruleset, line: Lines | None = None) -> list[LintWarning]:
    """Every warning about ``ruleset``, sorted by line."""
    at = line or _model_lines(ruleset)

    def warn(path: Path, message: str) -> LintWarning:
        return LintWarning(at(path), format_path(path), message)

    found = [
        *_shadowed_routes(ruleset, warn),
        *_unused_default(ruleset, warn),
        *_unused_destinations(ruleset, warn),
        *_unknown_values(ruleset, warn),
        *_json_template_strings(ruleset, warn),
    ]
    return sorted(found, key=lambda warning: warning.line)


def lines_of(text: str) -> Lines:
    """``line(path)`` for the rules file ``text`` (already loaded; nothing is checked)."""
    with gc_paused():  # as the loader does, for the same reason
        doc = parse(text, {}, Problems(""))  # no ${VAR} values needed: only lines are used
    return doc.line if doc is not None else (lambda path: 1)


def _model_lines(ruleset: Ruleset) -> Lines:
    def line(path: Path) -> int:
        head = path[0] if path else None
        if head == "routes" and len(path) > 1:
            return ruleset.routes[int(path[1])].line
        if head == "destinations" and len(path) > 1:
            return ruleset.destinations[str(path[1])].line
        if head == "default" and ruleset.default is not None:
            return ruleset.default.line
        return 1

    return line


Warn = Callable[[Path, str], LintWarning]


# --- routes that never match ------------------------------------------------------------


def _shadowed_routes(ruleset: Ruleset, warn: Warn) -> Iterator[LintWarning]:
    earliest: dict[frozenset[Hashable], int] = {}  # entries of routes that stop → first one
    for position, route in enumerate(ruleset.routes):
        entries = _entries(route.match)
        earlier = _covering(entries, earliest)
        if earlier is not None:
            how = _how(_entries(ruleset.routes[earlier].match), entries)
            message = f"never matches: {_name(ruleset.routes, earlier)} before it {how}"
            yield warn(("routes", position), f"{message} and does not continue")
        if not route.continue_:
            earliest.setdefault(entries, position)


def _covering(
    entries: frozenset[Hashable], earliest: Mapping[frozenset[Hashable], int]
) -> int | None:
    """The first earlier route whose entries are a subset of ``entries`` (so it matches
    whenever this one would), or ``None``."""
    if len(entries) > _MAX_SUBSET_ENTRIES:
        subsets: Iterable[frozenset[Hashable]] = [known for known in earliest if known <= entries]
    else:
        items = list(entries)
        subsets = (frozenset(c) for n in range(len(items) + 1) for c in combinations(items, n))
    return min((earliest[s] for s in subsets if s in earliest), default=None)


def _how(theirs: frozenset[Hashable], ours: frozenset[Hashable]) -> str:
    if not theirs:
        return "matches every event"
    return "has the same match" if theirs == ours else "has a subset of this match"


def _name(routes: tuple[Route, ...], position: int) -> str:
    return f"routes[{position}] {routes[position].name!r}"


def _entries(match: Any) -> frozenset[Hashable]:
    """The ``match`` mapping's entries as comparable keys (ANDed, so order does not count)."""
    if not isinstance(match, Mapping):
        return frozenset()
    return frozenset((key, _key(value)) for key, value in match.items())


def _key(value: Any) -> Hashable:
    """A key equal for two values only when the matcher treats them the same.

    Booleans stay apart from numbers (``final: true`` is not ``final: 1``) and numbers
    compare by their text (``7102`` is ``7102.0``), as the matcher does. Lists keep order.
    """
    if isinstance(value, Mapping):
        return ("map", frozenset((key, _key(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_key(item) for item in value))
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, (int, float)):
        return ("number", as_text(value))
    return (type(value).__name__, value)


def _unused_default(ruleset: Ruleset, warn: Warn) -> Iterator[LintWarning]:
    if ruleset.default is None:
        return
    for position, route in enumerate(ruleset.routes):
        if not _entries(route.match):
            message = f"never used: {_name(ruleset.routes, position)} matches every event"
            yield warn(("default",), message)
            return


# --- destinations nobody uses -------------------------------------------------------------


def _unused_destinations(ruleset: Ruleset, warn: Warn) -> Iterator[LintWarning]:
    fallbacks = {d.fallback for d in ruleset.destinations.values() if d.fallback}
    notified = {name for notification in ruleset.notifications for name in notification.to}
    for name in ruleset.destinations:
        if not ruleset.routes_using(name) and name not in fallbacks | notified:
            yield warn(("destinations", name), "not used by any route or the default")


# --- JSON written as one template string ----------------------------------------------

_STRING_BODY = (
    "a JSON body written as one template string: event data in {{ … }} can add keys or "
    "break the JSON; write it as a YAML mapping or list (a structured body), or pass each "
    "value through tojson"
)
_STRING_BLOCKS = (
    "Slack blocks written as one template string: event data in {{ … }} can add blocks or "
    "break the JSON; write them as a YAML list (structured blocks), or pass each value "
    "through tojson"
)


def _json_template_strings(ruleset: Ruleset, warn: Warn) -> Iterator[LintWarning]:
    for name, destination in ruleset.destinations.items():
        if isinstance(destination, HttpDestination) and isinstance(destination.body, Template):
            content_type = next(
                (v.source for k, v in destination.headers.items() if k.lower() == "content-type"),
                None,
            )
            body = destination.body
            if json_required(body.source, content_type) and outputs_outside_tojson(body):
                yield warn(("destinations", name, "body"), _STRING_BODY)
        if isinstance(destination, SlackDestination) and isinstance(destination.blocks, Template):
            if outputs_outside_tojson(destination.blocks):
                yield warn(("destinations", name, "blocks"), _STRING_BLOCKS)


# --- codes and statuses Webex Connect does not send ------------------------------------


def _unknown_values(ruleset: Ruleset, warn: Warn) -> Iterator[LintWarning]:
    for position, route in enumerate(ruleset.routes):
        if isinstance(route.match, Mapping):
            yield from _match_values(route.match, ("routes", position, "match"), warn)


def _match_values(match: Mapping[str, Any], at: Path, warn: Warn) -> Iterator[LintWarning]:
    for path, name, spec in _fields(match, at):
        check = _VALUE_CHECKS.get(name)
        if check is None:
            continue
        for where, value in _compared(spec, path):
            message = check(value)
            if message:
                yield warn(where, message)


def _fields(match: Mapping[str, Any], at: Path) -> Iterator[tuple[Path, str, Any]]:
    """``(path, field, spec)`` for every field condition, inside any/all/not too."""
    for key, value in match.items():
        if key == "not" and isinstance(value, Mapping):
            yield from _fields(value, at + (key,))
        elif key in COMBINATORS and isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _fields(item, at + (key, i))
        elif key not in COMBINATORS:
            yield at + (key,), key, value


def _compared(spec: Any, at: Path) -> Iterator[tuple[Path, Any]]:
    """The values ``spec`` compares by equality; prefix, regex, range and the like are not."""
    if isinstance(spec, (list, tuple)):
        for i, item in enumerate(spec):
            yield at + (i,), item
    elif isinstance(spec, Mapping):
        for operator in ("equals", "in", "not"):
            if operator in spec:
                yield from _compared(spec[operator], at + (operator,))
    else:
        yield at, spec


def _code_problem(value: Any) -> str | None:
    text = as_text(value)
    if text in CODE_DESCRIPTIONS:
        return None
    return f"code {text if text is not None else value!r} is not in the status-code table"


def _status_problem(value: Any) -> str | None:
    if isinstance(value, str) and normalize_status(value) in _STATUS_FORMS:
        return None
    close = difflib.get_close_matches(normalize_status(str(value)), list(_STATUS_FORMS), n=1)
    hint = f"did you mean {_STATUS_FORMS[close[0]]!r}?" if close else f"it sends {_statuses()}"
    return f"status {value!r} is never sent by Webex Connect ({hint})"


def _statuses() -> str:
    return ", ".join(STATUSES)


_VALUE_CHECKS: Mapping[str, Callable[[Any], str | None]] = {
    "code": _code_problem,
    "status": _status_problem,
}
