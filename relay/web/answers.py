"""The web tier's JSON answers to failures, the same from Flask's error handler and from the
webhook endpoint (which runs in front of Flask: :mod:`relay.web.ingest`).

- a refused request (:class:`~relay.errors.IngestError`: the webhook's checks, and the
  admin API's 400, 401, 403, 404 and 429): its status, ``{"error": code, "detail": …,
  "field": …}`` and its headers; an authentication failure says only its code, with the
  Basic challenge when Basic auth is on (the admin API's: ``Bearer``);
- Redis or the broker not answering, or Redis replicas not confirming an accept in time:
  503 ``{"error": "unavailable", "detail": …}`` with ``Retry-After``. The detail says
  which dependency, never where it is: exception texts name hosts and ports ("Error 111
  connecting to 10.0.3.7:6379"), which a caller has no use for; the exception is logged;
- an HTTP error (404, 405, 413 …): ``{"error": name, "detail": …}``;
- anything else is a bug: logged with its traceback, answered 500 ``internal_error``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from flask import Response
from kombu.exceptions import KombuError
from werkzeug.exceptions import HTTPException

from relay.errors import IngestError, NotReplicatedError, UnauthorizedError, UnavailableError
from relay.state import RedisError

log = logging.getLogger("relay.web")

RETRY_AFTER = "5"  #: seconds a sender is asked to wait after a 503
REDIS_DOWN = "redis not answering"
BROKER_DOWN = "broker not answering"
REPLICAS_DOWN = "redis replicas not confirming writes"
_HTTP_NAMES = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}


def json_body(body: object) -> bytes:
    """``body`` as JSON, written as Flask's ``jsonify`` writes it (compact, sorted keys)."""
    return (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode()


def json_answer(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A response with ``body`` as JSON (:func:`json_body`)."""
    return Response(json_body(body), status, headers, mimetype="application/json")


def error_answer(exc: BaseException, challenge: Mapping[str, str] | None = None) -> Response:
    """The answer to ``exc`` (see the module docstring); ``challenge``: the headers of the
    401 for Basic or API-key credentials missing or wrong (:class:`UnauthorizedError`)."""
    if isinstance(exc, IngestError):
        body: dict[str, object] = {"error": exc.code}
        if not exc.quiet:  # an authentication failure does not say which check failed
            body["detail"] = str(exc)
            if exc.field:
                body["field"] = exc.field
        headers = exc.headers
        if headers is None and isinstance(exc, UnauthorizedError):
            headers = challenge
        return json_answer(body, exc.status, headers)
    failed = what_failed(exc)
    if failed is not None:  # a dependency did not answer (503), not that relay failed
        log.warning("answering 503: %s", exc)
        return json_answer(
            {"error": "unavailable", "detail": failed}, 503, {"Retry-After": RETRY_AFTER}
        )
    if isinstance(exc, HTTPException):
        code = exc.code or 500
        error = _HTTP_NAMES.get(code, (exc.name or "error").lower().replace(" ", "_"))
        answer = json_answer({"error": error, "detail": exc.description}, code)
        for name, value in exc.get_headers():  # Allow on a 405, Retry-After on a 429 …
            if name.lower() != "content-type":
                answer.headers[name] = value
        return answer
    log.error("unexpected error (a bug): %s", exc, exc_info=exc)
    return json_answer({"error": "internal_error"}, 500)


def what_failed(exc: BaseException) -> str | None:
    """Which dependency did not answer, in words that name no host or port; None when
    ``exc`` is no dependency's failure."""
    if isinstance(exc, NotReplicatedError):
        return REPLICAS_DOWN
    if isinstance(exc, (UnavailableError, RedisError)):
        return REDIS_DOWN
    if isinstance(exc, KombuError):
        return BROKER_DOWN
    if isinstance(exc, OSError):
        return "redis or the broker not answering"
    return None
