"""The loaded rules: immutable destinations, routes and the ruleset that matches events.

Build one with :func:`relay.rules.load_rules`; the classes check nothing themselves.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from relay.rules.fields import order_value
from relay.rules.http_auth import OAuth2, Tls
from relay.rules.index import Index
from relay.rules.matcher import MATCH_ALL, Condition
from relay.rules.payloads import Structured
from relay.rules.retry import DEFAULT_RETRY, RetryPolicy
from relay.rules.templates import Template

#: the prefix of a signing secret given as base64 (the Standard Webhooks form)
WHSEC_PREFIX = "whsec_"


#: what a notification can be ``on``: the kinds of alert relay emits
ALERT_KINDS = ("dead_letter", "circuit_open", "circuit_closed")
#: the labels every alert carries, and so what a notification may ``group_by``: ``kind``
#: (one of :data:`ALERT_KINDS`), ``destination`` (whose delivery or circuit), ``route``
#: (the route of a dead-lettered delivery; empty for circuit alerts)
ALERT_LABELS = ("kind", "destination", "route")


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` attempts per ``per`` seconds (``20/s``, ``600/m``, ``5/100ms``)."""

    count: int
    per: float


@dataclass(frozen=True)
class CircuitBreaker:
    """Open after ``failures`` consecutive transient failures; probe after ``cooldown`` s."""

    failures: int
    cooldown: float


@dataclass(frozen=True, kw_only=True)
class Destination:
    """Common to every destination: its ``name``, ``line`` in the file and own ``retry``,
    and its controls: ``rate_limit``, ``concurrency`` (requests in flight across workers),
    ``circuit_breaker``, and ``fallback`` (the destination that gets a dead-lettered event
    with its failure; a fallback's own dead letters never go further). ``ordered_by``: the
    event field whose value is a key whose deliveries go one at a time, in accept order;
    ``on_failure`` (``skip`` or ``block``): what a dead-lettered one does to its key.
    """

    type: ClassVar[str] = ""
    name: str
    line: int = 0
    retry: RetryPolicy | None = None
    rate_limit: RateLimit | None = None
    concurrency: int | None = None
    circuit_breaker: CircuitBreaker | None = None
    fallback: str | None = None
    ordered_by: str | None = None
    on_failure: str = "skip"


@dataclass(frozen=True)
class Signing:
    """Standard Webhooks signature settings of an http destination.

    ``secret`` is one or more space-separated secrets, each read by :func:`secret_key`.
    """

    secret: str


def secret_key(secret: str) -> bytes:
    """The HMAC key of one signing secret: ``whsec_<base64>`` is the base64 of the key,
    any other text is used as the key's UTF-8 bytes. A bad ``whsec_`` value is a ValueError.
    """
    if secret.startswith(WHSEC_PREFIX):
        try:
            return base64.b64decode(secret[len(WHSEC_PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    return secret.encode()


@dataclass(frozen=True, kw_only=True)
class HttpDestination(Destination):
    """POST (or PUT/PATCH) the event, the raw payload, or a rendered body to ``url``.

    ``body`` is ``"event"``, ``"raw"``, a :class:`Template` (text) or a :class:`Structured`
    payload (JSON built from a YAML mapping or list); ``timeout`` is seconds. ``tls`` (its
    CAs, a client certificate) and ``auth`` (OAuth2 client credentials): see
    :mod:`relay.rules.http_auth`.
    """

    type: ClassVar[str] = "http"
    url: str
    method: str = "POST"
    headers: Mapping[str, Template] = field(default_factory=dict)
    body: str | Template | Structured = "event"
    timeout: float = 10.0
    sign: Signing | None = None
    tls: Tls | None = None
    auth: OAuth2 | None = None


@dataclass(frozen=True, kw_only=True)
class LogDestination(Destination):
    """One line per event in the worker log (``text`` defaults to a compact summary)."""

    type: ClassVar[str] = "log"
    text: Template


@dataclass(frozen=True, kw_only=True)
class EmailDestination(Destination):
    """An email through ``RELAY_SMTP_URL``; ``html`` (HTML-escaped values) makes it multipart."""

    type: ClassVar[str] = "email"
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    subject: Template
    body: Template
    html: Template | None = None


@dataclass(frozen=True, kw_only=True)
class SlackDestination(Destination):
    """Posts to ``webhook_url``, or with ``token`` to ``channel`` (chat.postMessage).

    ``text`` and ``blocks`` are Slack-escaped templates; ``blocks`` is a template of JSON
    text or a :class:`Structured` list of blocks.
    """

    type: ClassVar[str] = "slack"
    webhook_url: str | None = None
    token: str | None = None
    channel: str | None = None
    text: Template
    blocks: Template | Structured | None = None


@dataclass(frozen=True, kw_only=True)
class SmsReplyDestination(Destination):
    """Replies to an inbound message's sender; ``cooldown`` seconds per sender, if set."""

    type: ClassVar[str] = "sms_reply"
    text: Template
    from_: str | None = None
    cooldown: float | None = None
    to_opted_out: bool = False


DESTINATION_TYPES: Mapping[str, type[Destination]] = MappingProxyType(
    {
        kind.type: kind
        for kind in (
            HttpDestination,
            LogDestination,
            EmailDestination,
            SlackDestination,
            SmsReplyDestination,
        )
    }
)


@dataclass(frozen=True)
class Route:
    """A named condition and the destinations it sends to.

    ``match`` is the condition as written (read-only data, ``None`` = every event) for
    tools that inspect rules; ``condition`` is its compiled form. ``continue_`` is the
    ``continue`` key; ``retry``, when set, overrides the destinations' own policies.
    """

    name: str
    to: tuple[str, ...]
    match: Any = None
    condition: Condition = field(default=MATCH_ALL, compare=False, repr=False)
    continue_: bool = False
    retry: RetryPolicy | None = None
    line: int = 0


@dataclass(frozen=True)
class RouteMatch:
    """A matched route (``"default"`` for the default) and what it delivers to.

    ``retry`` maps each of ``destinations`` to its effective policy.
    """

    route: str
    destinations: tuple[str, ...]
    retry: Mapping[str, RetryPolicy] = field(compare=False)


#: the names a notification's ``template`` sees (``relay.worker.alerts.message_context``)
NOTIFICATION_NAMES = ("notification", "labels", "counts", "total", "examples", "first", "previous")


@dataclass(frozen=True)
class Notification:
    """relay's own alerts (``on`` some of :data:`ALERT_KINDS`), grouped and sent ``to``
    destinations of the file.

    Alerts with the same values of the ``group_by`` labels (:data:`ALERT_LABELS`) form one
    group: its first message goes ``group_wait`` seconds after its first alert, then at most
    one per ``group_interval`` seconds while new alerts arrive. ``template`` (text mode; the
    Slack form is compiled from the same source) replaces the default message.
    """

    name: str
    on: tuple[str, ...]
    to: tuple[str, ...]
    group_by: tuple[str, ...] = ("destination",)
    group_wait: float = 30.0
    group_interval: float = 300.0
    template: Template | None = None
    line: int = 0


@dataclass(frozen=True)
class Lifecycle:
    """The ``lifecycle`` key: a message (``transid``) whose receipts, none of them final,
    began ``final_receipt_within`` seconds ago (relay's receive time) gets one synthetic
    ``receipt_overdue`` event."""

    final_receipt_within: float
    line: int = 0


@dataclass(frozen=True)
class Ruleset:
    """A loaded rules file. ``version`` identifies the file's content (sha256, 12 hex)."""

    version: str
    path: str
    destinations: Mapping[str, Destination]
    routes: tuple[Route, ...]
    default: Route | None = None
    notifications: tuple[Notification, ...] = ()
    lifecycle: Lifecycle | None = None  #: None: no deadlines (the key absent)
    indexed: bool = field(default=True, compare=False, repr=False)
    #: values the file took from the environment through ``${...}``: shown masked
    interpolated: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    #: the fields destinations are ``ordered_by`` (each once), in file order
    ordered_fields: tuple[str, ...] = field(default=(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        index = Index([route.condition for route in self.routes], indexed=self.indexed)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_tests", tuple(route.condition.test for route in self.routes))
        by = (d.ordered_by for d in self.destinations.values() if d.ordered_by)
        object.__setattr__(self, "ordered_fields", tuple(dict.fromkeys(by)))

    def order_values(self, event: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(field, value)`` for each field some destination is ``ordered_by`` that has a
        value in ``event`` (the keys its deliveries are ordered by); none without any."""
        found = ((path, order_value(path, event)) for path in self.ordered_fields)
        return [(path, value) for path, value in found if value is not None]

    def retry_for(self, route: Route, destination: str) -> RetryPolicy:
        """The policy for deliveries to ``destination`` made through ``route``."""
        if route.retry is not None:
            return route.retry
        return self.destinations[destination].retry or DEFAULT_RETRY

    def match(self, event: Mapping[str, Any]) -> list[RouteMatch]:
        """The routes ``event`` matches, in order, each with the destinations it adds.

        Routes are tried in file order and the first match wins, unless that route says
        ``continue: true``, in which case the next routes are tried too. When no route
        matched, the default route (if any) is the result. A destination already reached
        through an earlier matched route is not listed again (each destination gets an
        event once); such a route still appears, possibly with no destinations.
        """
        matched: list[RouteMatch] = []
        seen: set[str] = set()
        tests = self._tests  # type: ignore[attr-defined]
        for position in self._index.candidates(event):  # type: ignore[attr-defined]
            if tests[position](event):
                route = self.routes[position]
                matched.append(self._route_match(route, seen))
                if not route.continue_:
                    break
        if not matched and self.default is not None:
            matched.append(self._route_match(self.default, seen))
        return matched

    def routes_using(self, destination: str) -> tuple[Route, ...]:
        """The routes (the default last) that send to ``destination``."""
        every = self.routes + ((self.default,) if self.default else ())
        return tuple(route for route in every if destination in route.to)

    def _route_match(self, route: Route, seen: set[str]) -> RouteMatch:
        fresh = tuple(name for name in route.to if name not in seen)
        seen.update(fresh)
        retry = {name: self.retry_for(route, name) for name in fresh}
        return RouteMatch(route.name, fresh, MappingProxyType(retry))
