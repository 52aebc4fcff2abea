"""Loading a rules file: YAML → strict schema → whole-file checks → an immutable Ruleset.

Every problem is collected before anything is raised, so one :class:`RulesError` lists them
all, each as ``PATH:LINE: where: what`` and sorted by line. A file that fails to load
produces no Ruleset at all, so callers keep the one they had. No message carries a value
the file took from the environment: each is hidden as ``****``
(:func:`relay.rules.masking.hide`), so that a failed reload, logged and shown by
``/readyz`` and the console, shows no secret.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from relay.errors import RulesError
from relay.events import routing_mark
from relay.rules.document import Problems, parse, read_source
from relay.rules.interpolation import Environment, Placeholders
from relay.rules.masking import hidden, hide
from relay.rules.model import Destination, Lifecycle, Notification, Route, Ruleset
from relay.rules.reader import Reader
from relay.rules.schema import read_destination, read_lifecycle, read_notification, read_route
from relay.rules.suggest import did_you_mean
from relay.times import format_duration

#: the keys a rules file may have at the top
TOP_KEYS = ("version", "destinations", "routes", "default", "notifications", "lifecycle")
SUPPORTED_VERSION = 1
DestinationChecks = Callable[[str, Destination], Iterable[str]]
"""Settings-dependent checks: ``(name, destination) -> messages``.

Each message is reported at the destination's line as ``destinations.NAME: message``, e.g.
a caller whose settings lack ``RELAY_SMTP_URL`` returns ``["email destinations need
RELAY_SMTP_URL"]`` for email destinations. Called only for destinations without problems.
"""


@dataclass(frozen=True)
class Limits:
    """Caps beyond the loader's own (a candidate's, see :mod:`relay.ops.rules_diff`): each
    one passed is a ``file:line: what`` error. None: no cap."""

    size: int | None = None  #: bytes of UTF-8 text
    routes: int | None = None  #: routes in the file
    template_text: int | None = None  #: characters of template text in all (each once)


def load_rules(
    path: str,
    env: Environment | None = None,
    checks: DestinationChecks | None = None,
    limits: Limits | None = None,
) -> Ruleset:
    """Load the rules file at ``path``; :class:`RulesError` lists every problem.

    ``env`` supplies ``${VAR}`` values (default: ``os.environ``;
    :data:`~relay.rules.interpolation.PLACEHOLDERS` reads none); ``checks`` adds
    settings-dependent problems per destination (see :data:`DestinationChecks`);
    ``limits`` caps what the file may hold.
    """
    return load_rules_text(read_source(path, RulesError), path, env, checks, limits)


def load_rules_text(
    text: str,
    path_label: str = "rules.yaml",
    env: Environment | None = None,
    checks: DestinationChecks | None = None,
    limits: Limits | None = None,
) -> Ruleset:
    """Like :func:`load_rules` for text in hand; ``path_label`` names it in messages."""
    limits = limits or Limits()
    problems = Problems(path_label)
    size = len(text.encode("utf-8", "surrogatepass")) if limits.size is not None else 0
    if limits.size is not None and size > limits.size:
        problems.add(1, "file", f"{size:,} bytes: more than the {limits.size:,} allowed")
        raise RulesError(problems.messages())
    with gc_paused():
        doc = parse(text, os.environ if env is None else env, problems)
        files = not isinstance(env, Placeholders)  # a candidate reads no file it names
        reader = Reader(doc, problems, limits.template_text, files) if doc is not None else None
        parts = _read(reader, checks, limits) if reader is not None else None
    if problems or parts is None:
        forms = hidden(doc.interpolated) if doc is not None else ()
        raise RulesError([hide(message, forms) for message in problems.messages()])
    destinations, routes, default, notifications, lifecycle = parts
    version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    assert doc is not None
    return Ruleset(
        version,
        path_label,
        MappingProxyType(destinations),
        routes,
        default,
        notifications,
        lifecycle,
        interpolated=doc.interpolated,
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while building: its full passes over the growing node tree make loading
    superlinear (10,000 routes: 2.2 s instead of 1.4 s). Restores the previous state."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


Parts = tuple[
    dict[str, Destination],
    tuple[Route, ...],
    Route | None,
    tuple[Notification, ...],
    Lifecycle | None,
]


def _read(reader: Reader, checks: DestinationChecks | None, limits: Limits) -> Parts | None:
    data = reader.doc.data
    if not isinstance(data, Mapping):
        reader.error((), "expected a mapping with version, destinations and routes")
        return None
    count = len(data["routes"]) if isinstance(data.get("routes"), list) else 0
    if limits.routes is not None and count > limits.routes:
        reader.error(("routes",), f"{count:,} routes: more than the {limits.routes:,} allowed")
        return None
    reader.unknown_keys((), data, dict.fromkeys(TOP_KEYS))
    _check_version(reader, data)
    # an empty "destinations:" or "routes:" (all commented out) is null: read it as empty
    destinations = _read_destinations(reader, _empty_if_null(data.get("destinations"), {}), checks)
    known = set(data["destinations"]) if isinstance(data.get("destinations"), Mapping) else set()
    routes = _read_routes(reader, _empty_if_null(data.get("routes"), []), known)
    default = None
    if "default" in data:
        default = read_route(reader, ("default",), data["default"], known)
    _check_replies_reach_inbound(reader, destinations, data.get("routes"), routes)
    _check_fallbacks(reader, data.get("destinations"), known)
    notifications = _read_notifications(
        reader, _empty_if_null(data.get("notifications"), []), known, destinations
    )
    lifecycle = read_lifecycle(reader, data.get("lifecycle"))
    return destinations, routes, default, notifications, lifecycle


def _check_fallbacks(reader: Reader, raw: Any, known: set[str]) -> None:
    """A fallback names another destination of the file, one that can take any event.

    A fallback may have a fallback of its own (used for the deliveries routes send it);
    deliveries it gets as a fallback never go further. Read from the file's destinations as
    written, so that a destination with another error has its fallback checked too.
    """
    if not isinstance(raw, Mapping):
        return
    for name, spec in raw.items():
        fallback = spec.get("fallback") if isinstance(spec, Mapping) else None
        if not isinstance(fallback, str):  # absent, or refused by the schema already
            continue
        where = ("destinations", name, "fallback")
        target = raw.get(fallback)
        if fallback == name:
            reader.error(where, "a destination cannot be its own fallback")
        elif fallback not in known:
            hint = did_you_mean(fallback, known)
            reader.error(where, f"undefined destination {fallback!r}{hint}")
        elif isinstance(target, Mapping) and target.get("type") == "sms_reply":
            reader.error(
                where,
                f"sms_reply destination {fallback!r} cannot be a fallback: "
                "it replies to inbound messages only",
            )


def _read_notifications(
    reader: Reader, data: Any, known: set[str], destinations: Mapping[str, Destination]
) -> tuple[Notification, ...]:
    """The ``notifications`` list; each goes to destinations that can send relay's own text."""
    if not isinstance(data, list):
        reader.error(("notifications",), "expected a list of notifications")
        return ()
    notifications: list[Notification] = []
    first: dict[str, int] = {}
    for i, item in enumerate(data):
        notification = read_notification(reader, ("notifications", i), item, known)
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name in first:
            where = ("notifications", i, "name")
            message = f"duplicate notification name {name!r} (first at line {first[name]})"
            reader.error(where, message)
        elif isinstance(name, str):
            first[name] = reader.doc.line(("notifications", i, "name"))
        if notification is not None and _can_notify(reader, i, item, notification, destinations):
            notifications.append(notification)
    return tuple(notifications)


def _can_notify(
    reader: Reader,
    i: int,
    item: Mapping[str, Any],
    notification: Notification,
    destinations: Mapping[str, Destination],
) -> bool:
    ok = True
    for j, name in enumerate(notification.to):
        if getattr(destinations.get(name), "type", None) == "sms_reply":
            listed = isinstance(item.get("to"), list)
            where = ("notifications", i, "to", j) if listed else ("notifications", i, "to")
            message = f"sms_reply destination {name!r} cannot send notifications: it replies "
            reader.error(where, message + "to inbound messages only")
            ok = False
    return ok


def _check_replies_reach_inbound(
    reader: Reader, destinations: Mapping[str, Destination], data: Any, routes: tuple[Route, ...]
) -> None:
    """An sms_reply answers inbound messages: a route that matches none cannot use it."""
    if not isinstance(data, list):
        return
    by_name = {route.name: route for route in routes}
    for i, item in enumerate(data):
        route_name = item.get("name") if isinstance(item, Mapping) else None
        route = by_name.get(route_name) if isinstance(route_name, str) else None
        if route is None or _can_match_inbound(route.match):
            continue
        for j, name in enumerate(route.to):
            if getattr(destinations.get(name), "type", None) == "sms_reply":
                where = (
                    ("routes", i, "to", j)
                    if isinstance(item.get("to"), list)
                    else ("routes", i, "to")
                )
                reader.error(
                    where,
                    f"sms_reply destination {name!r} replies to inbound "
                    "messages, but this route matches only other kinds",
                )


def _can_match_inbound(match: Any) -> bool:
    """False only when a top-level ``kind`` condition (or one under ``all``) rules it out."""
    if not isinstance(match, Mapping):
        return True
    if "kind" in match and not _kind_allows_inbound(match["kind"]):
        return False
    parts = match.get("all")
    return not isinstance(parts, (list, tuple)) or all(_can_match_inbound(p) for p in parts)


def _kind_allows_inbound(value: Any) -> bool:
    if isinstance(value, Mapping):
        if "equals" in value or "in" in value:
            return _kind_allows_inbound(value.get("equals", value.get("in")))
        return True  # other operators: not worth second-guessing
    values = value if isinstance(value, (list, tuple)) else [value]
    return any(str(v).casefold() == "inbound_message" for v in values)


def _empty_if_null(value: Any, empty: Any) -> Any:
    return empty if value is None else value


def _check_version(reader: Reader, data: Mapping[str, Any]) -> None:
    if "version" not in data:
        reader.error((), f"missing required key 'version' (add 'version: {SUPPORTED_VERSION}')")
    elif data["version"] != SUPPORTED_VERSION or isinstance(data["version"], bool):
        message = f"unsupported version {data['version']!r} (expected {SUPPORTED_VERSION})"
        reader.error(("version",), message)


def _read_destinations(
    reader: Reader, data: Any, checks: DestinationChecks | None
) -> dict[str, Destination]:
    if not isinstance(data, Mapping):
        reader.error(("destinations",), "expected a mapping of destination names to settings")
        return {}
    destinations = {}
    for name, settings in data.items():
        # a re-route's delivery ids end in ~<n>: ids of two routings must never be the same
        if isinstance(name, str) and routing_mark(name)[0] != name:
            message = "a name may not end in ~<number> (a re-route's delivery ids end so)"
            reader.error(("destinations", name), message)
            continue
        destination = read_destination(reader, name, settings)
        if destination is None:
            continue
        destinations[name] = destination
        for message in checks(name, destination) if checks else ():
            reader.error(("destinations", name), message)
    return destinations


def _read_routes(reader: Reader, data: Any, known: set[str]) -> tuple[Route, ...]:
    if not isinstance(data, list):
        reader.error(("routes",), "expected a list of routes")
        return ()
    routes: list[Route] = []
    first: dict[str, int] = {}
    for i, item in enumerate(data):
        route = read_route(reader, ("routes", i), item, known)
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name in first:
            where = ("routes", i, "name")
            reader.error(where, f"duplicate route name {name!r} (first at line {first[name]})")
        elif isinstance(name, str):
            first[name] = reader.doc.line(("routes", i, "name"))
        if route is not None:
            routes.append(route)
    return tuple(routes)


def describe(ruleset: Ruleset) -> str:
    """One line for ``relay rules check``: counts by kind, the default, the version."""
    kinds = Counter(destination.type for destination in ruleset.destinations.values())
    by_kind = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    routes = _count(len(ruleset.routes), "route")
    destinations = _count(len(ruleset.destinations), "destination")
    if by_kind:
        destinations += f" ({by_kind})"
    default = f"default → {', '.join(ruleset.default.to)}" if ruleset.default else "no default"
    if ruleset.notifications:  # only then: the summary of a file without any stays as it was
        destinations += ", " + _count(len(ruleset.notifications), "notification")
    if ruleset.lifecycle:  # only then, as for notifications
        within = format_duration(ruleset.lifecycle.final_receipt_within)
        default += f", final receipt within {within}"
    return f"{ruleset.path}: OK — {routes}, {destinations}, {default}, version {ruleset.version}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
