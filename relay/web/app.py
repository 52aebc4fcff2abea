"""Flask application factory: ``create_app(settings=None)`` does no work at import time."""

from __future__ import annotations

from flask import Flask
from flask.typing import ResponseReturnValue

from relay.ops.broker import make_celery
from relay.ops.checks import rules_holder
from relay.settings import Settings, load_settings
from relay.state import open_store
from relay.web import api, console, health, openapi
from relay.web.answers import error_answer
from relay.web.auth import IngestAuth
from relay.web.context import KEY, Relay
from relay.web.ingest import WebhookEndpoint

AUTH = "relay.ingest_auth"  #: key of the app's IngestAuth in ``app.extensions``


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask("relay")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    store = open_store(settings, timeout=settings.enqueue_timeout)
    relay = Relay(settings, store, make_celery(settings), rules_holder(settings, store))
    app.extensions[KEY] = relay
    # a SettingsError here (RELAY_REQUIRE_AUTH) stops create_app
    auth = app.extensions[AUTH] = IngestAuth.from_settings(settings)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(console.bp)
    app.wsgi_app = WebhookEndpoint(app.wsgi_app, relay, auth, settings.max_body_bytes)  # type: ignore[method-assign]

    @app.errorhandler(Exception)
    def answer(exc: Exception) -> ResponseReturnValue:
        """The one place that turns an exception into a JSON answer (relay.web.answers)."""
        return error_answer(exc, auth.challenge)

    return app
