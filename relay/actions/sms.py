"""The ``sms_reply`` destination: the Webex Connect client that sends an auto-reply.

Whether a reply may go out at all (opt-outs, loops, cooldowns) is decided before the
attempt, not here: :mod:`relay.rules.replies` (the rules) and :mod:`relay.worker.replies`
(the worker's state). See config/README.md: ``sms_reply``.

Sending (:func:`prepare`, :func:`send`, :func:`send_sms`):
``POST {api_url}/v1/sms/messages`` with the service key in a header (``Authorization`` by
default; some accounts use ``key``). 2xx is ok; 429, 5xx, timeouts and connection problems
are transient (``Retry-After`` honoured); every other answer is permanent, e.g.
"HTTP 400 7004: <message>". The service key never appears in an error text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from typing import Any, Literal

import requests

from relay.actions.base import (
    Outcome,
    classify_http,
    json_object,
    parse_retry_after,
    render_text,
    shorten,
)
from relay.actions.http import Answer, exchange
from relay.events import Job
from relay.rules import SmsReplyDestination
from relay.settings import Settings, digits

#: seconds, for connecting and for each read
DEFAULT_TIMEOUT = 10.0

#: characters; Webex Connect refuses longer content
MAX_CONTENT_CHARS = 4000

#: characters; Webex Connect's limit for an Idempotency-Key
MAX_IDEMPOTENCY_KEY_CHARS = 64

# GSM 03.38 default alphabet (3GPP TS 23.038 6.2.1) and its extension table's characters.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = "^{}\\[~]|€"
GSM_CHARACTERS: frozenset[str] = frozenset(GSM_BASIC + GSM_EXTENSION)

ContentType = Literal["text", "unicode"]


def prepare(destination: SmsReplyDestination, job: Job, settings: Settings) -> dict[str, Any]:
    """The reply to send: to the event's sender, from ``from`` or the number it was sent to."""
    event = job["event"]
    return {
        "url": f"{settings.webex_api_url.rstrip('/')}/v1/sms/messages",
        "from": digits(destination.from_ or event.get("recipient", "")),
        "to": "+" + digits(event.get("sender", "")),
        "content": render_text(destination.text, job),
        "correlationId": event["id"],
        "idempotencyKey": job["delivery_id"],
    }


def send(
    destination: SmsReplyDestination, prepared: dict[str, Any], job: Job, settings: Settings
) -> Outcome:
    """Send ``prepared`` with the service key of the settings."""
    return send_sms(
        settings.webex_api_url.rstrip("/"),
        settings.webex_service_key or "",
        from_=prepared["from"],
        to=prepared["to"],
        content=prepared["content"],
        correlation_id=prepared["correlationId"],
        idempotency_key=prepared["idempotencyKey"],
        key_header=settings.webex_key_header,
    )


def check(destination: SmsReplyDestination, settings: Settings) -> list[str]:
    """An sms_reply destination needs the Webex Connect service key, and callbacks that are
    authenticated: else anyone who can post to the webhook makes relay text any number, with
    our key and at our cost (unless RELAY_ALLOW_UNAUTHENTICATED=1 accepts that)."""
    problems = []
    if not settings.webex_service_key:
        problems.append("sms_reply destinations need RELAY_WEBEX_SERVICE_KEY")
    if not settings.ingest_auth_configured and not settings.allow_unauthenticated:
        problems.append(
            "sms_reply destinations need authenticated callbacks (RELAY_WEBEX_HUB_SECRET, "
            "RELAY_INGEST_BASIC_AUTH or RELAY_INGEST_API_KEY): without, anyone who can post "
            "to the webhook can make relay send SMS to any number "
            "(RELAY_ALLOW_UNAUTHENTICATED=1 allows it)"
        )
    return problems


def content_type_for_text(text: str) -> ContentType:
    """The ``contentType`` for ``text``: "text" or "unicode".

    "text" when every character is in the GSM 03.38 default alphabet or its extension
    table, else "unicode" (Webex Connect then sends UCS-2: fewer characters per part).
    """
    return "text" if GSM_CHARACTERS.issuperset(text) else "unicode"


def idempotency_key_for(key: str) -> str:
    """``key`` as an Idempotency-Key header value (Webex Connect allows 64 characters).

    ``key`` itself when it is at most 64 printable ASCII characters, else the SHA-256 hex
    digest of its UTF-8 bytes: exactly 64 characters, and the same for the same key, so
    retries still dedupe.
    """
    if len(key) <= MAX_IDEMPOTENCY_KEY_CHARS and key.isascii() and key.isprintable():
        return key
    return hashlib.sha256(key.encode()).hexdigest()


def message_body(
    from_: str, to: str, content: str, correlation_id: str, callback_data: str | None = None
) -> dict[str, str]:
    """The JSON body of :func:`send_sms`: ``from`` without "+", ``to`` as "+<digits>"."""
    body = {
        "from": from_.strip().removeprefix("+"),
        "to": "+" + re.sub(r"\D", "", to),
        "content": content,
        "contentType": content_type_for_text(content),
        "correlationId": correlation_id,
    }
    if callback_data is not None:
        body["callbackData"] = callback_data
    return body


def send_sms(
    api_url: str,
    service_key: str,
    *,
    from_: str,
    to: str,
    content: str,
    correlation_id: str,
    idempotency_key: str,
    key_header: str = "Authorization",
    callback_data: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> Outcome:
    """Ask Webex Connect to send ``content`` from ``from_`` to ``to``; classify its answer.

    The body is :func:`message_body`; headers are ``<key_header>: <service_key>``,
    ``Idempotency-Key`` (:func:`idempotency_key_for`: pass the stable delivery id, so a
    retry within the hour is not sent twice) and ``Content-Type: application/json``.
    Empty content, content over 4000 characters or a ``to`` without digits is permanent
    and nothing is sent. ``session`` defaults to this process's shared one.
    """
    started = time.monotonic()
    outcome = _refusal(to, content)
    if outcome is None:
        body = message_body(from_, to, content, correlation_id, callback_data)
        headers = {
            key_header: service_key,
            "Idempotency-Key": idempotency_key_for(idempotency_key),
            "Content-Type": "application/json",
        }
        url = f"{api_url.rstrip('/')}/v1/sms/messages"
        answer = exchange(
            "POST",
            url,
            json.dumps(body, ensure_ascii=False).encode(),
            headers,
            timeout,
            session,
            quiet=True,
        )
        outcome = answer if isinstance(answer, Outcome) else _outcome_of(answer)
    return dataclasses.replace(_masked(outcome, service_key), latency=time.monotonic() - started)


def _refusal(to: str, content: str) -> Outcome | None:
    """Why this message cannot be sent at all, or None."""
    if not content:
        return Outcome("permanent", error="empty SMS content (not sent)")
    if len(content) > MAX_CONTENT_CHARS:
        return Outcome(
            "permanent",
            error=f"SMS content is {len(content)} characters, over {MAX_CONTENT_CHARS} (not sent)",
        )
    if not re.search(r"\d", to):
        return Outcome("permanent", error="SMS recipient has no digits (not sent)")
    return None


def _masked(outcome: Outcome, secret: str) -> Outcome:
    """``outcome`` with ``secret`` blanked out of its error (the API never echoes it; be sure)."""
    if outcome.error and secret and secret in outcome.error:
        return dataclasses.replace(outcome, error=outcome.error.replace(secret, "***"))
    return outcome


def _outcome_of(answer: Answer) -> Outcome:
    kind = classify_http(answer.status)
    if kind == "ok":
        return Outcome("ok", status=answer.status)
    retry_after = parse_retry_after(answer.retry_after) if kind == "transient" else None
    error = shorten(_error_text(answer.status, answer.body))
    return Outcome(kind, status=answer.status, error=error, retry_after=retry_after)


def _error_text(status: int, body: bytes) -> str:
    """E.g. "HTTP 400 7004: <message>" from Webex Connect's ``{"code", "message"}``."""
    reply = json_object(body)
    code, message = reply.get("code"), reply.get("message")
    if code is not None or message is not None:
        head = f"HTTP {status} {code}" if code is not None else f"HTTP {status}"
        return f"{head}: {message}" if message is not None else head
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"
