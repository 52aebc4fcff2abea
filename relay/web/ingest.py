"""The webhook endpoint: authenticate, parse, dedupe, enqueue, answer."""

from __future__ import annotations

import logging
import math
import time

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from relay import metrics, parsing
from relay.durations import format_duration
from relay.errors import PayloadError
from relay.events import INBOUND_MESSAGE, Event
from relay.ops.history import parse_time
from relay.web.auth import IngestAuth
from relay.web.context import Relay, current_relay, relay_of

log = logging.getLogger("relay.ingest")
bp = Blueprint("ingest", __name__)

AUTH = "relay.ingest_auth"  #: key of the app's IngestAuth in ``app.extensions``
MAX_DEPTH = 32  #: nesting levels of JSON arrays and objects in a body
MAX_ARRAY = parsing.MAX_BATCH  #: items in any one JSON array of a body


@bp.record_once
def _set_up_auth(state: BlueprintSetupState) -> None:
    """Built with the app: a SettingsError here (RELAY_REQUIRE_AUTH) stops create_app."""
    settings = relay_of(state.app).settings
    state.app.extensions[AUTH] = IngestAuth.from_settings(settings)


@bp.before_request
def _start_clock() -> None:
    g.relay_started = time.perf_counter()


@bp.after_request
def _measure(response: Response) -> Response:
    """Every webhook POST is timed; a refused one is counted by its status."""
    if request.method == "POST":
        metric = metrics.m()
        if response.status_code == 200:
            metric.ingest_seconds.observe(time.perf_counter() - g.relay_started)
        else:
            metric.rejected.labels(str(response.status_code)).inc()
    return response


@bp.route("/webhooks/webex-connect", methods=["GET", "HEAD"], defaults={"source": "default"})
@bp.route("/webhooks/webex-connect/<source>", methods=["GET", "HEAD"])
def check_url(source: str) -> ResponseReturnValue:
    """Webex Connect checks the URL (HEAD) before it saves a webhook."""
    parsing.check_source(source)
    return jsonify(service="relay", source=source)


@bp.route("/webhooks/webex-connect", methods=["POST"], defaults={"source": "default"})
@bp.route("/webhooks/webex-connect/<source>", methods=["POST"])
def receive(source: str) -> ResponseReturnValue:
    auth: IngestAuth = current_app.extensions[AUTH]
    auth.check_headers(request.headers, request.remote_addr)
    body = read_body(current_app.config["MAX_CONTENT_LENGTH"])
    auth.check_signature(request.headers, body, request.remote_addr)
    parsing.check_source(source)
    parsing.check_content_type(request.headers.get("Content-Type"))
    document = parsing.decode(body)
    check_limits(document)
    relay = current_relay()
    events, fingerprints = parsing.build_events(document, source, relay.settings.own_numbers)
    check_references(events, isinstance(document, list))
    check_age(events, relay.settings.max_event_age, isinstance(document, list))
    accepted, duplicates = accept(relay, events, fingerprints)
    return jsonify(accepted=accepted, duplicates=duplicates)


def read_body(limit: int) -> bytes:
    """The body, or 413 when it is longer than ``limit`` bytes (RELAY_MAX_BODY_BYTES).

    Werkzeug refuses a Content-Length over the limit before reading anything, but it cuts
    a chunked body (no Content-Length; the server marks ``wsgi.input_terminated``) at the
    limit without a word, so for those one byte more is read to tell.
    """
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)
    stream = request.environ["wsgi.input"]
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
    """PayloadError for nesting past MAX_DEPTH, an array past MAX_ARRAY, or ±inf (1e999).

    Iterative, so no depth of input can exhaust the stack; the parser has already turned
    nesting deep enough to trouble it into a PayloadError.
    """
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError("body: number out of range (e.g. 1e999)", field="body")
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise PayloadError(f"body: JSON nested deeper than {MAX_DEPTH} levels", field="body")
        if isinstance(value, list) and len(value) > MAX_ARRAY:
            raise PayloadError(f"body: an array has more than {MAX_ARRAY} items", field="body")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)


def check_references(events: list[Event], batch: bool) -> None:
    """PayloadError for a ``transid`` or ``tid`` UTF-8 cannot carry (a lone surrogate).

    Both become Redis keys (look-ups by reference), which must encode. Message text may
    hold lone surrogates (a split emoji): the event is stored as ASCII-escaped JSON.
    """
    for index, event in enumerate(events):
        references = (
            (event.get("transid", ""), "deliveryInfoNotification.transid"),
            (event.get("tid", ""), "tid"),
        )
        for value, where in references:
            try:
                value.encode()
            except UnicodeEncodeError:
                field = f"[{index}].{where}" if batch else where
                raise PayloadError(
                    f"{field}: not valid Unicode (lone surrogate)", field=field
                ) from None


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
    round trip; duplicates are only counted. Workers take the inbox from there."""
    claims = relay.store.accept(fingerprints, events)
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
