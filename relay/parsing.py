"""From raw request bytes to validated events, before anything touches Redis."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Set

from relay.errors import PayloadError, UnsupportedMediaError
from relay.events import Event, inbound_event, new_id, receipt_event
from relay.schemas import parse_notification

MAX_BATCH = 1000  #: notifications in one JSON array
SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_JSON_TYPES = re.compile(r"^(application/([\w.+-]+\+)?json|text/json)$")


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
    """The JSON document in ``body``; PayloadError for anything else."""
    if not body.strip():
        raise PayloadError("body: empty; expected a JSON object or array", field="body")
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite)
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
