"""One log format for relay, Celery and gunicorn: ``RELAY_LOG_FORMAT=json|console``.

JSON: one object per line — ``ts``, ``level``, ``logger``, ``message`` and the structured
fields relay attaches to its notable steps (``event_id``, ``delivery_id``, ``route``,
``destination``, ``attempt``, ``outcome``, ``step`` …). Console: the same, as text.

Phone numbers in messages are masked to their last 4 digits unless ``RELAY_LOG_PII=1``;
relay never logs message text or callbackData itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import datetime, timezone

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
)
_PHONE = re.compile(r"(?<![A-Za-z0-9])\+?\d{7,15}(?![A-Za-z0-9])")


def mask_numbers(text: str) -> str:
    """``447700900123`` → ``********0123`` wherever a phone-number-like run appears."""
    return _PHONE.sub(lambda m: re.sub(r"\d", "*", m.group()[:-4]) + m.group()[-4:], text)


def _fields(record: logging.LogRecord) -> dict:
    return {k: getattr(record, k) for k in FIELDS if getattr(record, k, None) is not None}


class _Base(logging.Formatter):
    def __init__(self, pii: bool = False) -> None:
        super().__init__()
        self.pii = pii

    def message(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text if self.pii else mask_numbers(text)


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
        return json.dumps(line, ensure_ascii=False, default=str)


class ConsoleFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{stamp} {record.levelname:<7} {record.name}: {self.message(record)}"
        return f"{text}  [{extra}]" if extra else text


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


def configure(fmt: str | None = None, pii: bool | None = None, level: int = logging.INFO):
    """Route every logger (relay, Celery, kombu …) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, pii))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def gunicorn_logconfig() -> dict:
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
