"""The console's blueprint, and what every page's template is given."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, g

from relay.logs import mask_numbers
from relay.times import format_age
from relay.web.context import current_relay

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
)

PREFIX = "/ui"


def in_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


@bp.app_template_filter("pii")
def pii(value: Any) -> str:
    """A value as shown: phone numbers masked to their last 4 digits unless
    RELAY_LOG_PII=1, as in the logs."""
    text = "" if value is None else str(value)
    return text if current_relay().settings.log_pii else mask_numbers(text)


@bp.context_processor
def _page_context() -> dict[str, Any]:
    session = g.get("console_session")
    return {
        "session": session,
        "csrf_token": session.csrf if session else "",
        "is_admin": bool(session and session.admin),
    }


@bp.app_template_filter("age")
def age(seconds: float | None) -> str:
    """``42s``, ``3m 20s``, ``5h 2m``, ``2d 4h``."""
    return "" if seconds is None else format_age(seconds, parts=2)


@bp.app_template_filter("utc")
def utc(stamp: str | None) -> str:
    """An ISO 8601 UTC time as shown: ``2026-11-29 18:35:12 UTC``."""
    if not stamp:
        return ""
    return datetime.fromisoformat(stamp).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
