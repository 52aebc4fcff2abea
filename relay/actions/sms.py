"""The ``sms_reply`` destination: auto-replies through the Webex Connect API.

Auto-reply safety (see config/README.md: ``sms_reply``):

- STOP-class keywords mark the sender opted out and START/UNSTOP/YES clear it, before the
  event is matched (:func:`apply_opt_keywords`), so rules and templates see
  ``event.sender_opted_out`` as it now is (a STOP message sees ``true``: answer it with one
  confirmation from a destination that says ``to_opted_out: true``). Opt-outs are kept per
  sender number, without expiry (:class:`relay.state.replies.ReplyState`).
- No reply goes to an opted-out number (unless ``to_opted_out: true``), to a short code
  (six digits or fewer), to a sender that is not a phone number, or to one of
  ``RELAY_OWN_NUMBERS`` (:func:`skip_reason`): loops between two auto-responders stop there.
- ``cooldown``: at most one reply per (sender, destination) per window. The window is
  claimed by the delivery that sends; its own retries keep it.

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
import unicodedata
from collections.abc import Set
from typing import Literal

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
from relay.events import INBOUND_MESSAGE, Event, Job
from relay.rules import SmsReplyDestination
from relay.settings import Settings, digits
from relay.state.replies import ReplyState
from relay.times import epoch

#: seconds, for connecting and for each read
DEFAULT_TIMEOUT = 10.0

#: characters; Webex Connect refuses longer content
MAX_CONTENT_CHARS = 4000

#: characters; Webex Connect's limit for an Idempotency-Key
MAX_IDEMPOTENCY_KEY_CHARS = 64

#: messages that opt a number out, as :func:`opt_words` normalises them (CTIA's list, the
#: FCC's 2024 revocation words, their spaced and hyphenated forms, common short forms, and
#: the French ARRET used in Canada); RELAY_OPT_OUT_KEYWORDS adds more
OPT_OUT_KEYWORDS = frozenset(
    {
        "STOP",
        "STOPALL",
        "STOP ALL",
        "UNSUBSCRIBE",
        "UNSUB",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
        "OPT OUT",
        "ARRET",
    }
)
#: messages that opt a number back in; RELAY_OPT_IN_KEYWORDS adds more
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})

#: digits; a sender this short is a short code, never replied to
SHORT_CODE_MAX_DIGITS = 6

# GSM 03.38 default alphabet (3GPP TS 23.038 6.2.1) and its extension table's characters.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = "^{}\\[~]|€"
GSM_CHARACTERS: frozenset[str] = frozenset(GSM_BASIC + GSM_EXTENSION)

ContentType = Literal["text", "unicode"]


def apply_opt_keywords(
    state: ReplyState,
    event: Event,
    opt_out: frozenset[str] = OPT_OUT_KEYWORDS,
    opt_in: frozenset[str] = OPT_IN_KEYWORDS,
) -> None:
    """Update the sender's opt-out from the message; set ``event['sender_opted_out']``.

    A message that is an opt-out (or opt-in) word or phrase, or begins with one, decides
    (``STOP``, ``Stop please``, ``opt-out``); one that only contains an opt-out word further
    on (``please stop texting me``) opts nobody out and sets ``event['opt_out_ambiguous']``,
    so that rules can route it to a person or a clarification reply.

    The later message wins, by the message's own time (``datetime``, else ``ts``), its
    arrival breaking ties: a STOP sent after a START leaves the number opted out even when
    the two are routed in the other order.
    """
    if event.get("kind") != INBOUND_MESSAGE or not digits(event.get("sender", "")):
        return
    words = opt_words(event.get("text") or event.get("keyword", ""))
    decided = _decision(words, opt_out, opt_in)
    if decided is not None:
        event["sender_opted_out"] = state.set_opted_out(
            event["sender"], decided, message_order(event)
        )
        return
    event["sender_opted_out"] = state.opted_out(event["sender"])
    if any(_contains(words, word) for word in opt_out):
        event["opt_out_ambiguous"] = True


def opt_words(text: str) -> str:
    """A message as opt-out words are compared: full-width letters made plain, accents
    dropped, upper case, punctuation and hyphens as spaces, one space between words."""
    plain = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    letters = "".join(ch for ch in plain if not unicodedata.combining(ch)).upper()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in letters).split())


def _decision(words: str, opt_out: frozenset[str], opt_in: frozenset[str]) -> bool | None:
    """True (opt out) or False (opt in) when the message is such a word or phrase, or
    begins with one (``STOP please``); else None."""
    for phrases, verdict in ((opt_out, True), (opt_in, False)):
        if any(words == phrase or words.startswith(phrase + " ") for phrase in phrases):
            return verdict
    return None


def _contains(words: str, phrase: str) -> bool:
    return f" {phrase} " in f" {words} "


def message_order(event: Event) -> str:
    """Sortable text: the message's own time (UTC, ms), then its arrival (the event id,
    which sorts by arrival); a message without a readable time counts from its arrival.
    Times are read as everywhere else (:func:`relay.times.epoch`: ISO or Unix time)."""
    sent = epoch(event.get("timestamp")) or epoch(event.get("received_at"))
    return f"{int(sent * 1000) if sent else 0:015d}:{event.get('id', '')}"


def skip_reason(
    destination: SmsReplyDestination, event: Event, own_numbers: Set[str], state: ReplyState
) -> str | None:
    """Why this reply must not be sent, or None (cooldown is claimed separately)."""
    if event.get("kind") != INBOUND_MESSAGE:
        return "not an inbound message"
    sender = str(event.get("sender", ""))
    number = digits(sender)
    if not number or any(ch.isalpha() for ch in sender):
        return "sender is not a phone number"
    if len(number) <= SHORT_CODE_MAX_DIGITS:
        return "sender is a short code"
    if number in own_numbers:
        return "sender is one of our own numbers"
    if not destination.to_opted_out and state.opted_out(sender):
        return "sender opted out"
    return None


def prepare(destination: SmsReplyDestination, job: Job, settings: Settings) -> dict:
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


def send(destination: SmsReplyDestination, prepared: dict, job: Job, settings: Settings) -> Outcome:
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
