"""One log format for relay, Celery and gunicorn: ``RELAY_LOG_FORMAT=json|console``.

JSON: one object per line — ``ts``, ``level``, ``logger``, ``message`` and the structured
fields relay attaches to its notable steps (``event_id``, ``delivery_id``, ``route``,
``destination``, ``attempt``, ``outcome``, ``step`` …), and while traces are on, the
current span's ``trace_id`` and ``span_id`` (``relay.tracing``). Console: the same, as text
(without the span's ids).

Phone numbers in messages are masked to their last 4 digits unless ``RELAY_LOG_PII=1``;
relay never logs message text or callbackData itself.

Log text can still carry what others sent (a receiver's error, a request line, the
``log`` destination's rendered text), so no control character reaches the output: on the
console every C0/C1 control, U+2028/U+2029 and the bidirectional overrides are written as
``\\n``, ``\\xNN`` or ``\\uNNNN`` (a traceback keeps its line breaks; what the exception
says is escaped); in JSON the same characters are ``\\uNNNN`` escapes inside the strings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from datetime import datetime, timezone
from typing import Any

from relay import tracing

#: the structured fields a line may carry (others, such as Celery's task arguments with
#: their phone numbers and texts, are left out)
FIELDS = (
    "event_id",
    "delivery_id",
    "route",
    "destination",
    "attempt",
    "outcome",
    "step",
    "status",
    "rules_version",
    "reason",
    # who did what, for logins and the audit log (relay.access, relay.audit)
    "action",
    "role",
    "client",
    "user",
    "via",
    "ids",
    "count",
)

# -- phone numbers ---------------------------------------------------------------------------

#: a run of digits, maybe with a leading ``+``, maybe in groups separated by one space, dash or
#: dot, a group maybe in parentheses: ``447700900123``, ``+44 7700 900123``, ``(555) 555-0199``.
#: Not glued to letters or to another group (so ids, ``1.2.3.4:8000`` and ``2026-11-29
#: 15:43`` are never cut into a shorter candidate); which candidates are numbers, see
#: :func:`_is_phone`.
_PHONE = re.compile(
    r"(?<![A-Za-z0-9])(?<![A-Za-z0-9][.:/-])(?<!\d )(?<!\d\))(?<!\d\)[ .-])"
    r"\+?(?:\(\d{1,5}\)[ .-]?|\d+[ .-])*\d+"
    r"(?![A-Za-z0-9])(?![.:/-][A-Za-z0-9])(?! \d)"
)
_GROUPS = re.compile(r"\d+")
_DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{4}")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def _is_phone(candidate: str) -> bool:
    """7 to 15 digits, written the way phone numbers are: one unbroken run (as in the
    vendor's payloads), with a ``+`` or an area code in parentheses, in three groups or more,
    or in two after a trunk ``0`` (``07700 900123``); never a date, an IPv4 address or a
    decimal number."""
    groups = _GROUPS.findall(candidate)
    if not 7 <= sum(len(group) for group in groups) <= 15:
        return False
    if len(groups) == 1 or candidate[0] in "+(":
        return True
    if _DATE.fullmatch(candidate) or _IPV4.fullmatch(candidate):
        return False
    if len(groups) >= 3:
        return True
    return groups[0].startswith("0") and "." not in candidate


def _mask(match: re.Match[str]) -> str:
    number = match.group()
    if not _is_phone(number):
        return number
    hidden = sum(ch.isdigit() for ch in number) - 4
    return re.sub(r"\d", "*", number, count=hidden)


def mask_numbers(text: str) -> str:
    """``447700900123`` → ``********0123`` and ``(555) 555-0199`` → ``(***) ***-0199``
    wherever a phone number appears (see :func:`_is_phone`)."""
    return _PHONE.sub(_mask, text)


def mask_data(value: object) -> object:
    """A JSON-like value (objects, arrays, text, numbers) with the phone numbers in its
    texts masked by :func:`mask_numbers`; a whole number that is one (``447700900123``
    sent as a JSON number) becomes its masked text. Keys are kept as they are."""
    if isinstance(value, str):
        return mask_numbers(value)
    if isinstance(value, dict):
        return {key: mask_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_data(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        masked = mask_numbers(str(value))
        return value if masked == str(value) else masked
    return value


# -- control characters ----------------------------------------------------------------------

#: C0 and C1 controls (with DEL), the Unicode line and paragraph separators (line breaks to
#: some readers), and the bidirectional overrides and isolates (they reorder what follows)
_CONTROLS = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_CONSOLE = {c: _NAMED.get(c) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}
_CONSOLE_LINES = {c: text for c, text in _CONSOLE.items() if c != 0x0A}
#: what ``json.dumps(ensure_ascii=False)`` leaves as it is (it escapes C0 itself)
_JSON = {c: f"\\u{c:04x}" for c in _CONTROLS if c >= 0x7F}
_JSON_RAW = re.compile("[" + "".join(re.escape(chr(c)) for c in _JSON) + "]")  #: any of them


def escape(text: str) -> str:
    """``text`` on one line with no control character: ``\\n``, ``\\x1b``, ``\\u2028`` …"""
    return text.translate(_CONSOLE)


def _escape_lines(text: str) -> str:
    """As :func:`escape`, but line breaks stay (a traceback's own lines)."""
    return text.translate(_CONSOLE_LINES)


def _exception_text(exc: BaseException) -> str:
    """The traceback with its line breaks, but what each exception says (its message and
    notes, which may quote event data) escaped onto one line."""
    tb = traceback.TracebackException.from_exception(exc)
    said: set[str] = set()
    nodes = [tb]
    while nodes:
        node = nodes.pop()
        said.update(node.format_exception_only())
        nodes += [n for n in (node.__cause__, node.__context__) if n is not None]
        nodes += getattr(node, "exceptions", None) or []  # exception groups (3.11+)
    text = "".join(
        escape(chunk.rstrip("\n")) + "\n" if chunk in said else chunk for chunk in tb.format()
    )
    return _escape_lines(text.rstrip("\n"))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    given = record.__dict__  # where ``extra=`` puts them
    return {k: given[k] for k in FIELDS if given.get(k) is not None}


class _Base(logging.Formatter):
    def __init__(self, pii: bool = False) -> None:
        super().__init__()
        self.pii = pii

    def _masked(self, text: str) -> str:
        return text if self.pii else mask_numbers(text)

    def message(self, record: logging.LogRecord) -> str:
        """The message, then the traceback and stack if any, as they are (not escaped)."""
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return self._masked(text)


class JsonFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.message(record),
            **_fields(record),
        }
        ids = tracing.log_ids()  # None unless traces are on and a span is current
        if ids:
            line["trace_id"], line["span_id"] = ids
        # the controls json leaves raw can only stand inside strings: \uNNNN there (looked
        # for first: translating every line cost a fifth of formatting it)
        text = json.dumps(line, ensure_ascii=False, default=str)
        return text.translate(_JSON) if _JSON_RAW.search(text) else text


class ConsoleFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        message = self._masked(record.getMessage())
        text = escape(f"{stamp} {record.levelname:<7} {record.name}: {message}")
        if extra:
            text += "  [" + escape(extra) + "]"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + self._masked(_exception_text(record.exc_info[1]))
        if record.stack_info:
            text += "\n" + _escape_lines(self._masked(self.formatStack(record.stack_info)))
        return text


def log_format() -> str:
    value = os.environ.get("RELAY_LOG_FORMAT", "").strip().lower()
    if value in ("json", "console"):
        return value
    return "console" if sys.stderr.isatty() else "json"


def formatter(fmt: str | None = None, pii: bool | None = None) -> logging.Formatter:
    if pii is None:
        pii = os.environ.get("RELAY_LOG_PII", "").strip().lower() in ("1", "true", "yes", "on")
    kind = JsonFormatter if (fmt or log_format()) == "json" else ConsoleFormatter
    return kind(pii=pii)


def configure(fmt: str | None = None, pii: bool | None = None, level: int = logging.INFO) -> None:
    """Route every logger (relay, Celery, kombu …) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, pii))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def gunicorn_logconfig() -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its error log and relay's loggers in relay's format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"relay": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "relay",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        },
    }
