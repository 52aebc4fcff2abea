"""Flask application factory: ``create_app(settings=None)`` does no work at import time."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from kombu.exceptions import KombuError
from werkzeug.exceptions import HTTPException

from relay.errors import IngestError, UnavailableError
from relay.ops.broker import make_celery
from relay.ops.checks import rules_holder
from relay.settings import Settings, load_settings
from relay.state import RedisError, open_store
from relay.web import api, console, health, ingest, openapi
from relay.web.answers import unavailable
from relay.web.auth import UnauthorizedError
from relay.web.context import KEY, Relay
from relay.web.ingest import AUTH

log = logging.getLogger("relay.web")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask("relay")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    store = open_store(settings, timeout=settings.enqueue_timeout)
    app.extensions[KEY] = Relay(settings, store, make_celery(settings), rules_holder(settings))
    app.register_blueprint(ingest.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(console.bp)
    _register_error_handlers(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    """The one place that turns an exception into a JSON answer, for every path."""

    @app.errorhandler(IngestError)
    def refused(exc: IngestError) -> ResponseReturnValue:
        body: dict[str, object] = {"error": exc.code}
        if not exc.quiet:  # an authentication failure does not say which check failed
            body["detail"] = str(exc)
            if exc.field:
                body["field"] = exc.field
        headers = app.extensions[AUTH].challenge if isinstance(exc, UnauthorizedError) else {}
        return jsonify(body), exc.status, headers

    @app.errorhandler(UnavailableError)
    @app.errorhandler(RedisError)
    @app.errorhandler(KombuError)
    @app.errorhandler(OSError)
    def service_unavailable(exc: Exception) -> ResponseReturnValue:
        log.warning("answering 503: %s", exc)
        return unavailable(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        code = exc.code or 500
        names = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}
        error = names.get(code, (exc.name or "error").lower().replace(" ", "_"))
        return jsonify(error=error, detail=exc.description), code

    @app.errorhandler(Exception)
    def server_error(exc: Exception) -> ResponseReturnValue:
        log.exception("unexpected error (a bug): %s", exc)
        return jsonify(error="internal_error"), 500
