"""Flask application factory: ``create_app(settings=None)`` does no work at import time."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from relay.worker.app import RelayCelery, make_celery, pending_grace, rules_holder
from relay.errors import IngestError, UnavailableError
from relay.rules.reloader import RulesHolder
from relay.rules import Ruleset
from relay.settings import Settings, load_settings
from relay.state.store import Store, connect

log = logging.getLogger("relay.web")

RETRY_AFTER = "5"  #: seconds a sender is asked to wait after a 503


@dataclass
class Relay:
    """What the views need, built once per web process."""

    settings: Settings
    store: Store
    celery: RelayCelery
    rules_holder: RulesHolder

    @property
    def rules(self) -> Ruleset:
        """The rules in force now (reloaded when the file changes)."""
        self.rules_holder.ensure_watching()
        return self.rules_holder.current


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask("relay")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    client = connect(settings.require_redis(), timeout=settings.enqueue_timeout)
    store = Store(client, settings.history_ttl, settings.dedupe_ttl, grace=pending_grace(settings))
    app.extensions["relay"] = Relay(settings, store, make_celery(settings), rules_holder(settings))

    from relay.web import api
    from relay.web import health
    from relay.web.openapi import bp as docs_bp
    from relay.web import ingest as views

    app.register_blueprint(views.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(docs_bp)
    app.register_blueprint(api.bp)
    _register_error_handlers(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(IngestError)
    def ingest_error(exc: IngestError):
        body = {"error": exc.code, "detail": str(exc)}
        if exc.field:
            body["field"] = exc.field
        return jsonify(body), exc.status

    @app.errorhandler(UnavailableError)
    def unavailable(exc: UnavailableError):
        log.warning("answering 503: %s", exc)
        return jsonify(error="unavailable", detail=str(exc)), 503, {"Retry-After": RETRY_AFTER}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = exc.code or 500
        names = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}
        error = names.get(code, (exc.name or "error").lower().replace(" ", "_"))
        return jsonify(error=error, detail=exc.description), code

    @app.errorhandler(Exception)
    def server_error(exc: Exception):
        log.exception("unexpected error (a bug): %s", exc)
        return jsonify(error="internal_error"), 500
