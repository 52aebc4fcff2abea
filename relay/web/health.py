"""Liveness and readiness."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from relay import metrics
from relay.rules.reloader import ReloadFailure
from relay.web.answers import BROKER_DOWN, REDIS_DOWN, REPLICAS_DOWN
from relay.web.context import Relay, current_relay

log = logging.getLogger("relay.web")
bp = Blueprint("health", __name__)


@bp.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> ResponseReturnValue:
    """Liveness: the process answers; no dependency is asked."""
    return jsonify(status="ok")


@bp.route("/readyz", methods=["GET", "HEAD"])
def readyz() -> ResponseReturnValue:
    """200 only when Redis and the broker answer (and, with ``RELAY_REDIS_MIN_REPLICAS``,
    the primary has that many replicas in sync) and rules are loaded; JSON says which
    fails (``redis not answering``: the exception, with host and port, is logged, not
    answered).

    Rules are loaded before the process serves at all, so they never make it unready; the
    check is listed so monitors see the version in force, and ``reload failed: …`` (with a
    warning) when the file in place did not load and an older version still runs.
    """
    relay = current_relay()
    redis_state = _generic("redis", relay.store.check(), REDIS_DOWN)
    checks = {
        "redis": redis_state,
        "broker": _check_broker(relay) if relay.settings.broker_url else redis_state,
    }
    if relay.settings.redis_min_replicas and redis_state == "ok":
        # accepts wait for this many replicas: without them every POST would be a 503
        checks["replicas"] = _generic("replicas", relay.store.replication_check(), REPLICAS_DOWN)
    ready = all(value == "ok" for value in checks.values())
    version = relay.rules.version
    failure = relay.rules_holder.failure
    checks["rules"] = str(failure) if failure else "ok"
    found = [
        relay.store.eviction_warning(),
        relay.store.memory_warning(),
        _rules_warning(relay, failure),
    ]
    warnings = [warning for warning in found if warning]
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "rules_version": version,
        "warnings": warnings,
    }
    return jsonify(body), 200 if ready else 503


def _rules_warning(relay: Relay, failure: ReloadFailure | None) -> str | None:
    if failure is None:
        return None
    path = relay.rules_holder.path
    return (
        f"the rules file {path} does not load ({len(failure.errors)} error(s); "
        f"`relay rules check {path}` lists them): version {failure.version} stays in force"
    )


def _check_broker(relay: Relay) -> str:
    try:
        with relay.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=relay.settings.enqueue_timeout)
    except Exception as exc:  # kombu raises a variety of transport errors
        return _generic("broker", f"error: {exc}", BROKER_DOWN)
    return "ok"


def _generic(name: str, state: str, answer: str) -> str:
    """``ok``, or ``answer``: the detail (which names hosts and ports) goes to the log only."""
    if state == "ok":
        return state
    log.warning("not ready: %s: %s", name, state)
    return answer


@bp.route("/metrics", methods=["GET"])
def metrics_endpoint() -> Response:
    """Prometheus text format: this web tier's processes, plus gauges read from Redis."""
    relay = current_relay()
    body, content_type = metrics.render(relay.store, relay.queue_sizes)
    return Response(body, content_type=content_type)
