"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from relay import metrics
from relay.web.context import Relay, current_relay

bp = Blueprint("health", __name__)


@bp.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> ResponseReturnValue:
    """Liveness: the process answers; no dependency is asked."""
    return jsonify(status="ok")


@bp.route("/readyz", methods=["GET", "HEAD"])
def readyz() -> ResponseReturnValue:
    """200 only when Redis and the broker answer and rules are loaded; JSON says which fails.

    Rules are loaded before the process serves at all, so ``rules`` is always ``ok`` here;
    the check is listed so monitors see the version in force.
    """
    relay = current_relay()
    redis_state = relay.store.check()
    checks = {
        "redis": redis_state,
        "broker": _check_broker(relay) if relay.settings.broker_url else redis_state,
    }
    ready = all(value == "ok" for value in checks.values())
    checks["rules"] = "ok"
    warnings = [w for w in [relay.store.eviction_warning()] if w]
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "rules_version": relay.rules.version,
        "warnings": warnings,
    }
    return jsonify(body), 200 if ready else 503


def _check_broker(relay: Relay) -> str:
    try:
        with relay.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=relay.settings.enqueue_timeout)
    except Exception as exc:  # kombu raises a variety of transport errors
        return f"error: {exc}"
    return "ok"


@bp.route("/metrics", methods=["GET"])
def metrics_endpoint() -> Response:
    """Prometheus text format: this web tier's processes, plus gauges read from Redis."""
    relay = current_relay()
    body, content_type = metrics.render(relay.store, relay.queue_sizes)
    return Response(body, content_type=content_type)
