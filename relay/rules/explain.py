"""Why each route did or did not match an event (``relay rules test --explain``).

:func:`explain` is pure and follows :meth:`Ruleset.match` exactly: routes in order, the
first match wins unless it says ``continue``, the default only when nothing matched. For
a route that failed it names the first condition that did not hold, with the value seen::

    routes[0] failures: status: 'Delivered' not in ['Failed', 'Un-Delivered']
    routes[1] campaigns: callback.campaign: missing
    routes[2] inbound: matched
    routes[3] help: not tried (an earlier route matched)
    default: not used (a route matched)

Whether each leaf holds comes from the matcher itself (:func:`compile_condition`), so the
explanation cannot disagree with matching; this module only walks the ``match`` data to
say which part decided it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from relay.rules.fields import Event, as_number
from relay.rules.fields import field as field_access
from relay.rules.matcher import compile_condition
from relay.rules.model import Route, Ruleset

MATCHED = "matched"
FAILED = "failed"
NOT_TRIED = "not_tried"
NOT_USED = "not_used"  # the default, when a route matched

_SHOWN_CHARS = 60  #: longer values are cut in messages


@dataclass(frozen=True)
class RouteExplanation:
    """One route's fate for one event: ``where`` is ``routes[N]`` or ``default``.

    ``outcome`` is one of :data:`MATCHED`, :data:`FAILED`, :data:`NOT_TRIED` or
    :data:`NOT_USED`; ``reason`` says why (for a failed route, its first failing condition).
    """

    where: str
    route: str
    outcome: str
    reason: str = ""

    def __str__(self) -> str:
        label = self.where if self.where == "default" else f"{self.where} {self.route}"
        if self.outcome == FAILED:
            return f"{label}: {self.reason}"
        text = {MATCHED: "matched", NOT_TRIED: "not tried", NOT_USED: "not used"}[self.outcome]
        if self.where == "default" and self.outcome == MATCHED:
            text = "used"
        return f"{label}: {text} ({self.reason})" if self.reason else f"{label}: {text}"

    def to_dict(self) -> dict[str, str]:
        return {
            "where": self.where,
            "route": self.route,
            "outcome": self.outcome,
            "reason": self.reason,
        }


def explain(ruleset: Ruleset, event: Event) -> list[RouteExplanation]:
    """Every route of ``ruleset`` (then the default, if any) and what it did with ``event``."""
    explanations, stopped = [], False
    for position, route in enumerate(ruleset.routes):
        where = f"routes[{position}]"
        if stopped:
            explanations.append(
                RouteExplanation(where, route.name, NOT_TRIED, "an earlier route matched")
            )
        elif route.condition.test(event):
            note = "continue" if route.continue_ else ""
            explanations.append(RouteExplanation(where, route.name, MATCHED, note))
            stopped = not route.continue_
        else:
            explanations.append(RouteExplanation(where, route.name, FAILED, why_not(route, event)))
    if ruleset.default is not None:
        explanations.append(_default(explanations))
    return explanations


def _default(explanations: list[RouteExplanation]) -> RouteExplanation:
    if any(item.outcome == MATCHED for item in explanations):
        return RouteExplanation("default", "default", NOT_USED, "a route matched")
    return RouteExplanation("default", "default", MATCHED, "no route matched")


def why_not(route: Route, event: Event) -> str:
    """The first condition of ``route`` that does not hold for ``event``."""
    verdict = check(route.match, event)
    return "did not match" if verdict.holds else verdict.text


class Verdict(NamedTuple):
    """Whether a condition holds, and the part that decided it, as text."""

    holds: bool
    text: str


def check(spec: Mapping[str, Any] | None, event: Event) -> Verdict:
    """A ``match`` mapping (AND): the first entry that fails, or all of them holding."""
    if not spec:
        return Verdict(True, "matches every event")
    held = []
    for key, value in spec.items():
        verdict = _entry(str(key), value, event)
        if not verdict.holds:
            return verdict
        held.append(verdict.text)
    return Verdict(True, "; ".join(held))


def _entry(key: str, value: Any, event: Event) -> Verdict:
    if key == "not":
        inner = check(value, event)
        text = f"not: held ({inner.text})" if inner.holds else f"not: {inner.text}"
        return Verdict(not inner.holds, text)
    if key == "any":
        return _any(value, event)
    if key == "all":
        return _all(value, event)
    verdict = _field(key, value, event)
    return Verdict(verdict.holds, f"{key}: {verdict.text}")


def _any(items: Any, event: Event) -> Verdict:
    verdicts = [check(item, event) for item in items]
    for i, verdict in enumerate(verdicts):
        if verdict.holds:
            return Verdict(True, f"any[{i}]: {verdict.text}")
    tried = "; ".join(f"[{i}] {verdict.text}" for i, verdict in enumerate(verdicts))
    return Verdict(False, f"any: none held ({tried})")


def _all(items: Any, event: Event) -> Verdict:
    held = []
    for i, item in enumerate(items):
        verdict = check(item, event)
        if not verdict.holds:
            return Verdict(False, f"all[{i}]: {verdict.text}")
        held.append(f"all[{i}]: {verdict.text}")
    return Verdict(True, "; ".join(held))


def _field(path: str, spec: Any, event: Event) -> Verdict:
    """A field compared with a scalar, a list or a mapping of operators (ANDed)."""
    if not isinstance(spec, Mapping):
        return _leaf(path, None, spec, event)
    held = []
    for name, arg in spec.items():
        if name == "not":
            inner = _field(path, arg, event)
            verdict = Verdict(not inner.holds, _negated(inner))
        else:
            verdict = _leaf(path, name, arg, event)
        if not verdict.holds:
            return verdict
        held.append(verdict.text)
    return Verdict(True, " and ".join(held))


def _negated(inner: Verdict) -> str:
    return f"{inner.text} (excluded by not)" if inner.holds else inner.text


def _leaf(path: str, operator: str | None, arg: Any, event: Event) -> Verdict:
    """One comparison; the matcher decides whether it holds, this says what it saw."""
    spec = arg if operator is None else {operator: arg}
    holds = compile_condition({path: spec}).test(event)
    value = field_access(path).get(event)
    if value is None:
        return Verdict(holds, "missing")
    if operator is None:
        operator = "in" if isinstance(arg, (list, tuple)) else "equals"
    return Verdict(holds, _DESCRIBE[operator](show(value), arg, holds, value))


Describe = Callable[[str, Any, bool, Any], str]


def _equals(seen: str, arg: Any, holds: bool, value: Any) -> str:
    return f"{seen} {'==' if holds else '!='} {show(arg)}"


def _in(seen: str, arg: Any, holds: bool, value: Any) -> str:
    return f"{seen} {'in' if holds else 'not in'} {show(arg)}"


def _text_operator(verb: str, negative: str) -> Describe:
    def describe(seen: str, arg: Any, holds: bool, value: Any) -> str:
        what = f"any of {show(arg)}" if isinstance(arg, (list, tuple)) else show(arg)
        return f"{seen} {verb if holds else negative} {what}"

    return describe


def _range(seen: str, arg: Any, holds: bool, value: Any) -> str:
    bounds = show(arg)
    if as_number(value) is None:
        return f"{seen} is not a number (range {bounds})"
    return f"{seen} {'in' if holds else 'not in'} range {bounds}"


def _exists(seen: str, arg: Any, holds: bool, value: Any) -> str:
    return "exists" if holds else f"{seen} exists (exists: false)"


_DESCRIBE: Mapping[str, Describe] = {
    "equals": _equals,
    "in": _in,
    "prefix": _text_operator("starts with", "does not start with"),
    "suffix": _text_operator("ends with", "does not end with"),
    "contains": _text_operator("contains", "does not contain"),
    "regex": _text_operator("matches regex", "does not match regex"),
    "range": _range,
    "exists": _exists,
}


def show(value: Any) -> str:
    """A value as messages show it: YAML-ish booleans, lists in brackets, long text cut."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(item) for item in value) + "]"
    if isinstance(value, Mapping):
        text = "{" + ", ".join(f"{key}: {show(item)}" for key, item in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
