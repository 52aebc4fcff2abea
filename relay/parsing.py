"""From raw request bytes to validated events, before anything touches Redis.

:func:`decode` reads the JSON (every string in it valid Unicode: :mod:`relay.text`),
:func:`build_events` validates each notification (:mod:`relay.schemas`) and normalises it
into an :class:`~relay.events.Event` (:func:`receipt_event`, :func:`inbound_event`; the
events relay makes for overdue messages: :func:`overdue_event`, :func:`overdue_from_payload`):
sender and recipient, keyword, callbackData parsed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Set
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import parse_qsl

from relay.codes import CODE_DESCRIPTIONS, is_final
from relay.errors import PayloadError, UnsupportedMediaError
from relay.events import (
    DELIVERY_RECEIPT,
    INBOUND_MESSAGE,
    OWN_SOURCE,
    RECEIPT_OVERDUE,
    Event,
    new_id,
    utc_now_iso,
)
from relay.schemas import parse_notification
from relay.settings import digits
from relay.text import may_hold_surrogates, valid

MAX_BATCH = 1000  #: notifications in one JSON array
SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_JSON_TYPES = re.compile(r"^(application/([\w.+-]+\+)?json|text/json)$")
_PAIR_SPLIT = re.compile(r"[;&]")


def check_content_type(content_type: str | None) -> None:
    """415 unless the Content-Type is absent or a JSON type."""
    if not content_type:
        return
    mimetype = content_type.split(";", 1)[0].strip().lower()
    if not _JSON_TYPES.match(mimetype):
        raise UnsupportedMediaError(f"Content-Type {mimetype!r} is not JSON")


def check_source(source: str) -> None:
    if not SOURCE_PATTERN.match(source):
        raise PayloadError("source: must be 1-64 letters, digits, '.', '_' or '-'", field="source")


def decode(body: bytes) -> object:
    """The JSON document in ``body``, each lone surrogate in its strings (keys included)
    replaced by U+FFFD; PayloadError for anything else."""
    if not body.strip():
        raise PayloadError("body: empty; expected a JSON object or array", field="body")
    try:
        document = json.loads(body, parse_constant=_reject_constant, parse_float=_finite)
        return valid(document) if may_hold_surrogates(body) else document
    except OverflowError:
        raise PayloadError("body: number out of range (e.g. 1e999)", field="body") from None
    except RecursionError:
        raise PayloadError("body: JSON nested too deeply", field="body") from None
    except UnicodeDecodeError:
        raise PayloadError("body: not valid UTF-8", field="body") from None
    except ValueError as exc:
        raise PayloadError(f"body: malformed JSON: {exc}", field="body") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    """A JSON number with a fraction or an exponent; OverflowError past a float's range
    (``1e999`` would be infinity, which no later step expects)."""
    value = float(text)
    if not math.isfinite(value):
        raise OverflowError(text)
    return value


def notifications(document: object) -> list[tuple[str, object]]:
    """``(path, item)`` for one object or each item of an array."""
    if isinstance(document, list):
        if not document:
            raise PayloadError("body: empty array; expected notifications", field="body")
        if len(document) > MAX_BATCH:
            raise PayloadError(f"body: more than {MAX_BATCH} notifications", field="body")
        return [(f"[{index}]", item) for index, item in enumerate(document)]
    return [("", document)]


def build_events(
    document: object, source: str, own_numbers: Set[str]
) -> tuple[list[Event], list[str]]:
    """Validated events and their dedupe fingerprints, or a PayloadError for the first bad one."""
    events: list[Event] = []
    fingerprints: list[str] = []
    for path, item in notifications(document):
        kind, fields = parse_notification(item, path)
        event_id = new_id()
        if kind == "receipt":
            events.append(receipt_event(fields, item, source, event_id))
        else:
            events.append(inbound_event(fields, item, source, event_id, own_numbers))
        fingerprints.append(fingerprint(item))
    return events, fingerprints


def fingerprint(notification: object) -> str:
    """The dedupe key of a notification: same JSON content (whatever the key order or
    spacing) → same fingerprint."""
    canonical = json.dumps(notification, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- normalisation -------------------------------------------------------------------------


def receipt_event(fields: Mapping[str, Any], raw: object, source: str, event_id: str) -> Event:
    """Event for a delivery receipt; ``fields`` come from the receipt schema."""
    status = fields["status"]
    code = fields.get("code", "")
    callback_data = fields.get("callback_data", "")
    event: Event = {
        "id": event_id,
        "kind": DELIVERY_RECEIPT,
        "source": source,
        "received_at": utc_now_iso(),
        "status": status,
        "final": is_final(status),
        "code": code,
        "code_description": CODE_DESCRIPTIONS.get(code, ""),
        "description": fields.get("description", ""),
        "additional_info": fields.get("additional_info", ""),
        "destination": fields.get("destination", ""),
        "channel": fields.get("channel", ""),
        "timestamp": fields.get("timestamp", ""),
        "transid": fields.get("transid", ""),
        "subtid": fields.get("subtid", ""),
        "correlation_id": fields.get("correlation_id", ""),
        "callback_data": callback_data,
        "callback": parse_callback(callback_data),
        "raw": raw,
    }
    problem = callback_problem(callback_data)
    if problem:
        event["callback_error"] = problem
    return event


def inbound_event(
    fields: Mapping[str, Any], raw: object, source: str, event_id: str, own_numbers: Set[str]
) -> Event:
    """Event for an inbound message; ``fields`` come from the inbound schema."""
    sender, recipient = end_user_and_business(fields["oa"], fields["da"], own_numbers)
    text = fields.get("text", "")
    return {
        "id": event_id,
        "kind": INBOUND_MESSAGE,
        "source": source,
        "received_at": utc_now_iso(),
        "tid": fields.get("tid", ""),
        "user_id": fields.get("user_id", ""),
        "network_id": fields.get("network_id", ""),
        "timestamp": fields.get("timestamp", ""),
        "channel": fields.get("channel", ""),
        "sender": sender,
        "recipient": recipient,
        "text": text,
        "keyword": keyword(text),
        "raw": raw,
    }


def end_user_and_business(oa: str, da: str, own_numbers: Set[str]) -> tuple[str, str]:
    """(sender, recipient): whichever of oa/da is one of ours is the business side.

    Without a match in ``own_numbers`` (or with none configured), ``oa`` is the end user,
    as in the vendor's examples and telecom convention.
    """
    if own_numbers and digits(oa) in own_numbers and digits(da) not in own_numbers:
        return da, oa
    return oa, da


def keyword(text: str) -> str:
    """First word, upper-cased, without surrounding punctuation or accents."""
    for word in text.split():
        stripped = "".join(ch for ch in _strip_accents(word) if ch.isalnum() or ch in "-_'")
        stripped = stripped.strip("-_'")
        if stripped:
            return stripped.upper()
    return ""


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


#: nesting levels a JSON ``callbackData`` may have (the same as a request body's)
CALLBACK_MAX_DEPTH = 32


def parse_callback(data: str) -> dict[str, Any]:
    """``callbackData`` as a mapping: a JSON object, or ``k=v;k2=v2`` / ``k=v&k2=v2`` pairs.

    A JSON object nested deeper than CALLBACK_MAX_DEPTH reads as ``{}``: event data nested
    that deep would only serve to exhaust a parser's stack further down the line; so does
    one holding a number that is not finite (``NaN``, ``1e999``), which no JSON can store.
    Its strings are valid Unicode, as the body's (a lone surrogate escaped in it: U+FFFD).
    """
    data = data.strip()
    if not data:
        return {}
    if data.startswith("{"):
        try:
            value = _callback_json(data)
        except (ValueError, RecursionError, OverflowError):
            return {}
        return valid(value) if isinstance(value, dict) and _shallow(value) else {}
    pairs = [part for part in _PAIR_SPLIT.split(data) if part.strip()]
    if not pairs or not all("=" in part for part in pairs):
        return {}
    return dict(parse_qsl("&".join(pairs), keep_blank_values=True))


def callback_problem(data: str) -> str | None:
    """Why a ``callbackData`` written as JSON reads as ``{}`` (else None)."""
    data = data.strip()
    if not data.startswith("{"):
        return None
    try:
        value = _callback_json(data)
    except RecursionError:
        return f"callbackData: JSON nested deeper than {CALLBACK_MAX_DEPTH} levels"
    except OverflowError:
        return "callbackData: number out of range (e.g. 1e999)"
    except ValueError as exc:
        return f"callbackData: not valid JSON ({exc})"
    if isinstance(value, dict) and not _shallow(value):
        return f"callbackData: JSON nested deeper than {CALLBACK_MAX_DEPTH} levels"
    return None


def _callback_json(data: str) -> object:
    """``data`` as JSON, read as strictly as a body (:func:`decode`)."""
    return json.loads(data, parse_constant=_reject_constant, parse_float=_finite)


def _shallow(value: object) -> bool:
    """True when no array or object in ``value`` is nested past CALLBACK_MAX_DEPTH."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > CALLBACK_MAX_DEPTH:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


# -- receipt_overdue: the event relay makes for a message without its final receipt --------


class OverdueMessage(Protocol):
    """What an overdue event tells of its message (``relay.state.lifecycle.Message``)."""

    @property
    def transid(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def last_status(self) -> str: ...
    @property
    def last_code(self) -> str: ...
    @property
    def first_received(self) -> float: ...
    @property
    def callback_data(self) -> str: ...
    @property
    def correlation_id(self) -> str: ...


def overdue_event(message: OverdueMessage, now: float, event_id: str | None = None) -> Event:
    """The ``receipt_overdue`` event of a message whose final receipt did not come in
    time. Its ``raw`` is the payload ``relay rules test --event`` reads back
    (:func:`overdue_from_payload`)."""
    first = datetime.fromtimestamp(message.first_received, timezone.utc)
    raw = {
        "kind": RECEIPT_OVERDUE,
        "transid": message.transid,
        "destination": message.destination,
        "last_status": message.last_status,
        "last_code": message.last_code,
        "first_received_at": first.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "age_seconds": max(int(now - message.first_received), 0),
        "callbackData": message.callback_data,
        "correlationid": message.correlation_id,
    }
    return overdue_from_payload(raw, OWN_SOURCE, event_id or new_id(now))


def overdue_from_payload(raw: Mapping[str, Any], source: str, event_id: str) -> Event:
    """A ``receipt_overdue`` event from its payload (``raw``: see :func:`overdue_event`)."""
    callback_data = str(raw.get("callbackData", ""))
    return {
        "id": event_id,
        "kind": RECEIPT_OVERDUE,
        "source": source,
        "received_at": utc_now_iso(),
        "transid": str(raw.get("transid", "")),
        "destination": str(raw.get("destination", "")),
        "last_status": str(raw.get("last_status", "")),
        "last_code": str(raw.get("last_code", "")),
        "first_received_at": str(raw.get("first_received_at", "")),
        "age_seconds": int(raw.get("age_seconds", 0)),
        "callback_data": callback_data,
        "callback": parse_callback(callback_data),
        "correlation_id": str(raw.get("correlationid", "")),
        "raw": dict(raw),
    }
