"""The 503 answer, the same wherever the web tier finds Redis or the broker not answering.

The body says which dependency, never where it is: exception texts name hosts and ports
("Error 111 connecting to 10.0.3.7:6379"), which a caller has no use for. The caller logs
the exception itself.
"""

from __future__ import annotations

from flask import jsonify
from flask.typing import ResponseReturnValue
from kombu.exceptions import KombuError

from relay.errors import UnavailableError
from relay.state import RedisError

RETRY_AFTER = "5"  #: seconds a sender is asked to wait after a 503
REDIS_DOWN = "redis not answering"
BROKER_DOWN = "broker not answering"


def unavailable(exc: BaseException) -> ResponseReturnValue:
    """503 ``{"error": "unavailable", "detail": ...}`` with ``Retry-After``."""
    return jsonify(error="unavailable", detail=what_failed(exc)), 503, {"Retry-After": RETRY_AFTER}


def what_failed(exc: BaseException) -> str:
    """Which dependency did not answer, in words that name no host or port."""
    if isinstance(exc, (UnavailableError, RedisError)):
        return REDIS_DOWN
    if isinstance(exc, KombuError):
        return BROKER_DOWN
    return "redis or the broker not answering"
