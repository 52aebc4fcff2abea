"""Rule test cases: ``relay rules test [RULES] --cases FILE`` gates rule changes in CI.

A cases file is a YAML list; each case names a payload and what the rules must do with it::

    - name: failed receipt goes to the failures webhook
      payload:                          # the raw Webex Connect payload, as YAML (or JSON)
        deliveryInfoNotification:
          deliveryInfo: {deliveryStatus: Failed, code: "7102", destination: "447700900123"}
      routes: [failures]                # the matched routes, exactly, in order
      destinations: [trace, failures-webhook]   # the destinations reached, exactly (any order)

    - name: help keyword
      payload_file: payloads/help.json  # JSON, relative to the cases file
      source: shortcode                 # optional: the URL's <source> (default "default")
      own_numbers: ["12345"]            # optional: RELAY_OWN_NUMBERS for this case (default none)
      routes: [help]

    - name: nothing routes a submitted receipt
      payload: {deliveryInfoNotification: {deliveryInfo: {deliveryStatus: Submitted}}}
      unrouted: true                    # no route matched and there is no default

Every case needs ``name`` (unique), exactly one of ``payload`` and ``payload_file``, and at
least one of ``routes``, ``destinations`` and ``unrouted``. ``routes: [default]`` expects
the default route. A payload that is a list (a batch) gives several events; each must meet
the expectations. Opt-outs are decided as the worker decides them
(:mod:`relay.rules.replies`) on a simulated state of the case's own, from nobody opted out:
``STOP`` has ``sender_opted_out: true`` (and so have the sender's later events of the
batch), ``please stop texting me`` has ``opt_out_ambiguous: true``. Strings may
use ``${VAR}`` as in rules files. Any problem in the file — unknown keys, a payload Webex
Connect could not have sent, a missing payload file — is reported as ``FILE:LINE: where:
what`` and no case runs.

Loading (:func:`load_cases`) reads files; running (:func:`run_case`) is pure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay.errors import CasesError, PayloadError
from relay.events import Event
from relay.parsing import SOURCE_PATTERN, build_events, decode
from relay.rules.document import Document, Path, Problems, format_path, parse, read_source
from relay.rules.model import Ruleset
from relay.rules.replies import DEFAULT_WORDS, OptWords, SimulatedOptOuts, apply_opt_keywords
from relay.rules.suggest import did_you_mean
from relay.settings import digits

#: the keys a case may have
CASE_KEYS = (
    "name",
    "payload",
    "payload_file",
    "source",
    "own_numbers",
    "routes",
    "destinations",
    "unrouted",
)
EXPECTATIONS = ("routes", "destinations", "unrouted")


@dataclass(frozen=True)
class Case:
    """One case: the events its payload gives and what is expected (``None``: not checked)."""

    name: str
    line: int
    events: tuple[Event, ...]
    routes: tuple[str, ...] | None = None
    destinations: frozenset[str] | None = None
    unrouted: bool | None = None


@dataclass(frozen=True)
class CaseResult:
    """A case run: the routes each event matched and every expectation it missed; the
    events as the rules saw them (with the opt-out fields: :func:`prepared`)."""

    case: Case
    routes: tuple[tuple[str, ...], ...]
    failures: tuple[str, ...]
    events: tuple[Event, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        if self.passed:
            return f"PASS  {self.case.name}"
        return f"FAIL  {self.case.name}: {'; '.join(self.failures)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.case.name,
            "line": self.case.line,
            "passed": self.passed,
            "routes": [list(names) for names in self.routes],
            "failures": list(self.failures),
        }


def load_cases(path: str, env: Mapping[str, str] | None = None) -> list[Case]:
    """The cases in the file at ``path``; :class:`CasesError` lists every problem."""
    return read_cases(read_source(path, CasesError), path, os.path.dirname(path), env)


def read_cases(
    text: str, label: str = "cases.yaml", base: str = ".", env: Mapping[str, str] | None = None
) -> list[Case]:
    """Like :func:`load_cases` for text in hand; ``payload_file`` is relative to ``base``."""
    problems = Problems(label)
    doc = parse(text, os.environ if env is None else env, problems)
    cases = _Reader(doc, problems, base).cases() if doc is not None else []
    if problems:
        raise CasesError(problems.messages())
    return cases


def run_case(ruleset: Ruleset, case: Case, words: OptWords = DEFAULT_WORDS) -> CaseResult:
    """What ``ruleset`` does with each of the case's events, against the expectations;
    opt-outs decided by ``words`` on a simulated state of the case's own."""
    routes, failures = [], []
    events = prepared(case, words)
    for n, event in enumerate(events):
        matches = ruleset.match(event)
        names = tuple(match.route for match in matches)
        reached = {name for match in matches for name in match.destinations}
        prefix = f"event [{n}]: " if len(case.events) > 1 else ""
        failures += [prefix + failure for failure in _misses(case, names, reached)]
        routes.append(names)
    if failures:
        failures += _unknown_names(ruleset, case)
    return CaseResult(case, tuple(routes), tuple(failures), tuple(events))


def run_cases(
    ruleset: Ruleset, cases: list[Case], words: OptWords = DEFAULT_WORDS
) -> list[CaseResult]:
    return [run_case(ruleset, case, words) for case in cases]


def prepared(case: Case, words: OptWords = DEFAULT_WORDS) -> list[Event]:
    """The case's events as the rules see them: copies, with the opt-out fields the worker
    sets before matching (from nobody opted out; earlier events of the case count)."""
    optouts = SimulatedOptOuts()
    events = [event.copy() for event in case.events]
    for event in events:
        apply_opt_keywords(optouts, event, words)
    return events


def summary(results: list[CaseResult]) -> str:
    """``3 passed, 1 failed``."""
    passed = sum(result.passed for result in results)
    return f"{passed} passed, {len(results) - passed} failed"


def _misses(case: Case, names: tuple[str, ...], reached: set[str]) -> list[str]:
    misses = []
    if case.routes is not None and names != case.routes:
        misses.append(f"routes {list(names)} != expected {list(case.routes)}")
    if case.destinations is not None and reached != case.destinations:
        misses.append(f"destinations {sorted(reached)} != expected {sorted(case.destinations)}")
    if case.unrouted and names:
        misses.append(f"routed to {list(names)}, expected unrouted")
    if case.unrouted is False and not names:
        misses.append("unrouted, expected a route")
    return misses


def _unknown_names(ruleset: Ruleset, case: Case) -> list[str]:
    """Hints for expectations that name no route or destination of the rules."""
    routes = {route.name for route in ruleset.routes} | ({"default"} if ruleset.default else set())
    hints = [
        f"no route {name!r} in the rules{did_you_mean(name, routes)}"
        for name in case.routes or ()
        if name not in routes
    ]
    hints += [
        f"no destination {name!r} in the rules{did_you_mean(name, ruleset.destinations)}"
        for name in sorted(case.destinations or ())
        if name not in ruleset.destinations
    ]
    return hints


class _Invalid(Exception):
    """The value at hand is wrong; the message says how."""


class _Reader:
    """Checks the cases data, reporting every problem at its line."""

    def __init__(self, doc: Document, problems: Problems, base: str) -> None:
        self.doc = doc
        self.problems = problems
        self.base = base

    def error(self, path: Path, message: str) -> None:
        self.problems.add(self.doc.line(path), format_path(("cases", *path)), message)

    def cases(self) -> list[Case]:
        data = self.doc.data
        if not isinstance(data, list) or not data:
            self.error((), "expected a non-empty list of cases")
            return []
        cases: list[Case] = []
        first: dict[str, int] = {}
        for i, item in enumerate(data):
            case = self.case((i,), item)
            if case is not None and case.name in first:
                message = f"duplicate case name {case.name!r} (first at line {first[case.name]})"
                self.error((i, "name"), message)
            elif case is not None:
                first[case.name] = case.line
                cases.append(case)
        return cases

    def case(self, path: Path, item: Any) -> Case | None:
        if not isinstance(item, Mapping):
            self.error(path, "expected a mapping with name, payload and expectations")
            return None
        before = len(self.problems)
        for key in item:
            if key not in CASE_KEYS:
                self.error(path + (key,), f"unknown key {key!r}{did_you_mean(key, CASE_KEYS)}")
        values = {key: self.value(path, key, item[key]) for key in CASE_KEYS if key in item}
        self.require(path, item)
        events = self.events(path, values)
        if events is None or len(self.problems) > before:
            return None
        return Case(values["name"], self.doc.line(path), events, **_expectations(values))

    def require(self, path: Path, item: Mapping[str, Any]) -> None:
        if "name" not in item:
            self.error(path, "missing required key 'name'")
        if "payload" in item and "payload_file" in item:
            self.error(path, "give payload or payload_file, not both")
        elif "payload" not in item and "payload_file" not in item:
            self.error(path, "missing required key 'payload' (or 'payload_file')")
        if not any(key in item for key in EXPECTATIONS):
            self.error(path, "no expectation: give routes, destinations or unrouted")

    def value(self, path: Path, key: str, value: Any) -> Any:
        try:
            return _PARSERS[key](value)
        except _Invalid as exc:
            self.error(path + (key,), str(exc))
            return None

    def events(self, path: Path, values: Mapping[str, Any]) -> tuple[Event, ...] | None:
        """The payload's events, or ``None`` when it (or source, own_numbers) is unusable."""
        needed = ("payload", "payload_file", "source", "own_numbers")
        if ("payload" in values) == ("payload_file" in values):
            return None
        if any(key in values and values[key] is None for key in needed):
            return None
        key = "payload" if "payload" in values else "payload_file"
        payload = values["payload"] if key == "payload" else self.payload_file(path, values[key])
        if payload is None:
            return None
        source, own = values.get("source", "default"), values.get("own_numbers", frozenset())
        try:
            events, _ = build_events(payload, source, own)
        except PayloadError as exc:
            named = f"{values[key]}: " if key == "payload_file" else ""
            self.error(path + (key,), f"{named}{exc}")
            return None
        return tuple(events)

    def payload_file(self, path: Path, name: str) -> object:
        where = path + ("payload_file",)
        try:
            with open(os.path.join(self.base, name), "rb") as file:
                return decode(file.read())
        except OSError as exc:
            self.error(where, f"cannot read {name}: {exc.strerror or exc}")
        except PayloadError as exc:
            self.error(where, f"{name}: {exc}")
        return None


def _expectations(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: values[key] for key in EXPECTATIONS if key in values}
    if "routes" in out:
        out["routes"] = tuple(out["routes"])
    if "destinations" in out:
        out["destinations"] = frozenset(out["destinations"])
    return out


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("expected a non-empty string")
    return value


def _payload(value: Any) -> Any:
    if not isinstance(value, (Mapping, list)):
        raise _Invalid("expected the payload as a mapping (or a list of them)")
    return value


def _source(value: Any) -> str:
    if not isinstance(value, str) or not SOURCE_PATTERN.match(value):
        raise _Invalid("expected 1-64 letters, digits, '.', '_' or '-'")
    return value


def _numbers(value: Any) -> frozenset[str]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or not digits(item):
            raise _Invalid(f"not a phone number or short code: {item!r}")
    return frozenset(digits(item) for item in items)


def _names(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise _Invalid("expected a name or a list of names")
    return items


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("expected true or false")
    return value


_PARSERS = {
    "name": _name,
    "payload": _payload,
    "payload_file": _name,
    "source": _source,
    "own_numbers": _numbers,
    "routes": _names,
    "destinations": _names,
    "unrouted": _boolean,
}
