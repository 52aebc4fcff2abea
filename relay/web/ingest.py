"""The webhook endpoint: authenticate, parse, dedupe, enqueue, answer.

:class:`WebhookEndpoint` serves ``/webhooks/webex-connect`` and
``/webhooks/webex-connect/<source>`` as a WSGI layer in front of the Flask app
(``create_app`` installs it as ``app.wsgi_app``, Flask's way of adding middleware); every
other path goes on to Flask. Webex Connect's POSTs are the one path that carries load, and
Flask's dispatch around a view (request context, URL map, the app's before- and
after-request hooks, ``jsonify``) was about a sixth of the web's CPU under load (README,
*Performance*). The request object is werkzeug's, as in Flask, and the answers to failures
are the app's own (:mod:`relay.web.answers`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Response
from werkzeug.exceptions import ClientDisconnected, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.wrappers import Request

from relay import metrics, parsing, tracing
from relay.errors import PayloadError
from relay.events import INBOUND_MESSAGE, Event
from relay.times import format_duration, parse_time
from relay.web.answers import error_answer, json_answer, json_body
from relay.web.auth import IngestAuth
from relay.web.context import Relay

log = logging.getLogger("relay.ingest")

PATH = "/webhooks/webex-connect"  #: the default source's URL; ``PATH/<source>`` for others
RULES = (PATH, f"{PATH}/<source>")  #: the URLs the endpoint serves, written as Flask rules
METHODS = ("GET", "HEAD", "OPTIONS", "POST")
MAX_DEPTH = 32  #: nesting levels of JSON arrays and objects in a body
MAX_ARRAY = parsing.MAX_BATCH  #: items in any one JSON array of a body

JSON = "application/json"
StartResponse = Any  #: the WSGI server's ``start_response``
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WebhookEndpoint:
    """The webhook URLs as WSGI, in front of ``app`` (the Flask app's own ``wsgi_app``)."""

    def __init__(self, app: WSGIApp, relay: Relay, auth: IngestAuth, max_body: int) -> None:
        self.app = app
        self.relay = relay
        self.auth = auth
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        source = source_of(environ.get("PATH_INFO", ""))
        if source is None:
            return self.app(environ, start_response)
        request = Request(environ)
        method = request.method
        if method == "POST":
            return self._post(request, source, start_response)
        if method in ("GET", "HEAD"):
            try:
                response = check_url(source)
            except PayloadError as exc:
                response = error_answer(exc)
        elif method == "OPTIONS":
            response = Response(status=200, headers={"Allow": ", ".join(METHODS)})
        else:
            response = error_answer(MethodNotAllowed(valid_methods=METHODS))
        return response(environ, start_response)

    def _post(
        self, request: Request, source: str, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Every webhook POST is timed; a refused one is counted by its status. The 200 is
        written as it is: a response object cost 8 µs of CPU, for two headers."""
        started = time.perf_counter()
        span = tracing.request(request.environ, RULES[source != "default"], source)
        try:
            accepted, duplicates = self.receive(request, source)
        except Exception as exc:  # every failure gets its JSON answer
            response = error_answer(exc, self.auth.challenge)
            metrics.m().rejected.labels(str(response.status_code)).inc()
            tracing.end_request(span, response.status_code, [], 0)
            return response(request.environ, start_response)
        metrics.m().ingest_seconds.observe(time.perf_counter() - started)
        tracing.end_request(span, 200, accepted, duplicates)
        body = json_body({"accepted": accepted, "duplicates": duplicates})
        start_response("200 OK", [("Content-Type", JSON), ("Content-Length", str(len(body)))])
        return [body]

    def receive(self, request: Request, source: str) -> tuple[list[str], int]:
        """The ids of the events accepted from the request, and how many were duplicates."""
        auth = self.auth
        auth.check_headers(request.headers, request.remote_addr)
        body = read_body(request, self.max_body)
        auth.check_signature(request.headers, body, request.remote_addr)
        parsing.check_source(source)
        parsing.check_content_type(request.headers.get("Content-Type"))
        document = parsing.decode(body)
        check_limits(document)
        relay = self.relay
        events, fingerprints = parsing.build_events(document, source, relay.settings.own_numbers)
        check_age(events, relay.settings.max_event_age, isinstance(document, list))
        return accept(relay, events, fingerprints)


def source_of(path: str) -> str | None:
    """The source a webhook URL names (``default`` for :data:`PATH` itself), or None for
    any other path (one segment after ``PATH/``, as Flask's ``<source>`` would match)."""
    if path == PATH:
        return "default"
    if path.startswith(PATH) and path[len(PATH) : len(PATH) + 1] == "/":
        rest = path[len(PATH) + 1 :]
        if rest and "/" not in rest:
            return rest
    return None


def check_url(source: str) -> Response:
    """Webex Connect checks the URL (HEAD) before it saves a webhook."""
    parsing.check_source(source)
    return json_answer({"service": "relay", "source": source})


def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 when it is longer than ``limit`` bytes (RELAY_MAX_BODY_BYTES).

    With a ``Content-Length``, one past the limit is refused before anything is read, and a
    body that ends short of it is a 400 (werkzeug's ``ClientDisconnected``). Without one,
    a chunked body (the server marks ``wsgi.input_terminated``) is read up to one byte past
    the limit, to tell; with neither there is no body (as werkzeug reads it).
    """
    stream = request.environ["wsgi.input"]
    length = request.content_length
    if length is not None:
        if length > limit:
            raise RequestEntityTooLarge()
        body: bytes = stream.read(length) if length else b""
        if len(body) < length:
            raise ClientDisconnected()
        return body
    if not request.environ.get("wsgi.input_terminated"):
        return b""
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


def check_limits(document: object) -> None:
    """PayloadError for nesting past MAX_DEPTH or an array past MAX_ARRAY.

    Iterative, so no depth of input can exhaust the stack; the parser has already turned
    nesting deep enough to trouble it into a PayloadError, and numbers out of range too.
    Only arrays and objects are visited.
    """
    stack: list[tuple[Any, int]] = [(document, 1)] if isinstance(document, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadError(f"body: JSON nested deeper than {MAX_DEPTH} levels", field="body")
        if isinstance(value, list):
            if len(value) > MAX_ARRAY:
                raise PayloadError(f"body: an array has more than {MAX_ARRAY} items", field="body")
            children: Iterable[object] = value
        else:
            children = value.values()
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


RECEIPT_TIME = "deliveryInfoNotification.deliveryInfo.timeStamp"


def check_age(events: list[Event], max_age: float, batch: bool, now: float | None = None) -> None:
    """PayloadError for a notification older than ``max_age`` seconds by its own time
    (RELAY_MAX_EVENT_AGE, 0: off): a receipt's ``timeStamp``, an inbound message's
    ``datetime`` (else ``ts``). While the guard is on, a missing or unreadable time is
    refused too: a replay could otherwise pass by leaving it out.
    """
    if not max_age:
        return
    now = time.time() if now is None else now
    for index, event in enumerate(events):
        where = _time_field(event)
        field = f"[{index}].{where}" if batch else where
        moment = parse_time(event.get("timestamp"))
        if moment is None:
            raise PayloadError(
                f"{field}: missing or not a time (RELAY_MAX_EVENT_AGE needs it)", field=field
            )
        if now - moment.timestamp() > max_age:
            raise PayloadError(
                f"{field}: older than RELAY_MAX_EVENT_AGE ({format_duration(max_age)})",
                field=field,
            )


def _time_field(event: Event) -> str:
    """The payload field the event's ``timestamp`` came from, as the vendor spells it."""
    if event.get("kind") != INBOUND_MESSAGE:
        return RECEIPT_TIME
    raw = event.get("raw")
    given = {str(k).lower() for k, v in raw.items() if v} if isinstance(raw, dict) else set()
    return "ts" if "ts" in given and not given & {"datetime", "timestamp"} else "datetime"


def accept(relay: Relay, events: list[Event], fingerprints: list[str]) -> tuple[list[str], int]:
    """Store each new event durably (dedupe claim, pending routing task, inbox) in one Redis
    round trip, with its accept number for the keys destinations are ordered by (the rules'
    ``ordered_by``: ``relay.state.ordering``) and the request's trace context (when traces
    are on: the worker's routing continues it); duplicates are only counted. Workers take
    the inbox from there."""
    ruleset = relay.rules
    orders = [ruleset.order_values(event) for event in events] if ruleset.ordered_fields else ()
    claims = relay.store.accept(fingerprints, events, orders, tracing.context())
    new = [(event, fp) for event, fp, ok in zip(events, fingerprints, claims, strict=True) if ok]
    metric = metrics.m()
    for event, _ in new:
        metric.received.labels(event["kind"], metrics.source_label(event["source"])).inc()
        log.info(
            "accepted %s %s from %s",
            event["id"],
            event["kind"],
            event["source"],
            extra={"event_id": event["id"], "step": "accepted"},
        )
    if len(events) > len(new):
        metric.duplicates.inc(len(events) - len(new))
    return [event["id"] for event, _ in new], len(events) - len(new)
