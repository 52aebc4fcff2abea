"""The webhook endpoint: parse, dedupe, enqueue, answer."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request
from kombu.exceptions import KombuError, OperationalError
from redis import RedisError

from relay.errors import UnavailableError
from relay.ingest import parsing

log = logging.getLogger("relay.ingest")
bp = Blueprint("ingest", __name__)


@bp.route("/webhooks/webex-connect", methods=["GET", "HEAD"], defaults={"source": "default"})
@bp.route("/webhooks/webex-connect/<source>", methods=["GET", "HEAD"])
def check_url(source: str):
    """Webex Connect checks the URL (HEAD) before it saves a webhook."""
    parsing.check_source(source)
    return jsonify(service="relay", source=source)


@bp.route("/webhooks/webex-connect", methods=["POST"], defaults={"source": "default"})
@bp.route("/webhooks/webex-connect/<source>", methods=["POST"])
def receive(source: str):
    parsing.check_source(source)
    parsing.check_content_type(request.headers.get("Content-Type"))
    document = parsing.decode(request.get_data(cache=False))
    relay = current_app.extensions["relay"]
    events, fingerprints = parsing.build_events(document, source, relay.settings.own_numbers)
    accepted, duplicates = accept(relay, events, fingerprints)
    return jsonify(accepted=accepted, duplicates=duplicates)


def accept(relay, events: list[dict], fingerprints: list[str]) -> tuple[list[str], int]:
    """Claim, enqueue and confirm each new event; duplicates are only counted."""
    claims = relay.store.claim(fingerprints, [event["id"] for event in events])
    new = [(event, fp) for event, fp, ok in zip(events, fingerprints, claims, strict=False) if ok]
    enqueued: list[str] = []
    try:
        for event, fp in new:
            enqueue(relay.celery, event)
            enqueued.append(fp)
    except UnavailableError:
        relay.store.release([fp for _, fp in new[len(enqueued) :]])
        raise
    finally:
        if enqueued:
            relay.store.confirm(enqueued)
    for event, _ in new:
        log.info("accepted %s %s from %s", event["id"], event["kind"], event["source"])
    return [event["id"] for event, _ in new], len(events) - len(new)


def enqueue(celery, event: dict) -> None:
    try:
        celery.send_task("relay.route", args=[event])
    except (OperationalError, KombuError, RedisError, OSError) as exc:
        raise UnavailableError(f"broker: {exc}") from exc
