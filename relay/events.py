"""The normalized event (DESIGN §6): what rules, templates, receivers and history see.

An event is a plain JSON-native dict, so that it travels through Celery's JSON
serializer unchanged. Fields that belong to the other kind are absent, not null.
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from collections.abc import Mapping, Set
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from relay.codes import CODE_DESCRIPTIONS, is_final
from relay.settings import digits

DELIVERY_RECEIPT = "delivery_receipt"
INBOUND_MESSAGE = "inbound_message"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIR_SPLIT = re.compile(r"[;&]")


def new_id(now: float | None = None) -> str:
    """A ULID: 26 characters, sortable by creation time (ms), 80 random bits."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def receipt_event(fields: Mapping, raw: object, source: str, event_id: str) -> dict:
    """Event for a delivery receipt; ``fields`` come from the receipt schema."""
    status = fields["status"]
    code = fields.get("code", "")
    callback_data = fields.get("callback_data", "")
    return {
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


def inbound_event(
    fields: Mapping, raw: object, source: str, event_id: str, own_numbers: Set[str]
) -> dict:
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


def parse_callback(data: str) -> dict:
    """``callbackData`` as a mapping: a JSON object, or ``k=v;k2=v2`` / ``k=v&k2=v2`` pairs."""
    data = data.strip()
    if not data:
        return {}
    if data.startswith("{"):
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return {}
        return value if isinstance(value, dict) else {}
    pairs = [part for part in _PAIR_SPLIT.split(data) if part.strip()]
    if not pairs or not all("=" in part for part in pairs):
        return {}
    return dict(parse_qsl("&".join(pairs), keep_blank_values=True))
