"""The 503 answer, the same wherever the web tier finds Redis or the broker not answering."""

from __future__ import annotations

from flask import jsonify
from flask.typing import ResponseReturnValue

RETRY_AFTER = "5"  #: seconds a sender is asked to wait after a 503


def unavailable(exc: BaseException) -> ResponseReturnValue:
    """503 ``{"error": "unavailable", "detail": ...}`` with ``Retry-After``."""
    return jsonify(error="unavailable", detail=str(exc)), 503, {"Retry-After": RETRY_AFTER}
