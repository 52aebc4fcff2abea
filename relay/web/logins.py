"""Logins to the admin API and the console: the log of each, and the throttle.

A login is a token typed at ``/ui/login``, or an ``Authorization`` header on an ``/api/``
request (the API has no session: each request logs in). Each is logged on
``relay.access`` with the client address, the role it got and ``via`` (``console`` or
``api``); the token never is. Failed ones count against the client address in Redis, for
every web process alike (:mod:`relay.state.logins`): after 10 within a minute the address
is refused ``429`` with ``Retry-After`` for a minute, whatever token it sends.

The address is the one the web server sees (``REMOTE_ADDR``): behind a reverse proxy
that is the proxy's, so its clients share one count.
"""

from __future__ import annotations

import logging
import math

from flask import current_app, g, request

from relay.ops.audit import Actor
from relay.state.logins import LoginThrottle
from relay.web.context import current_relay

log = logging.getLogger("relay.access")

KEY = "relay.logins"  #: key of the app's LoginThrottle in ``app.extensions``


def client_address() -> str:
    """The address the request came from, as the web server sees it."""
    return request.remote_addr or "unknown"


def actor() -> Actor:
    """Who makes this request, for the audit log: the role its console session or API
    token logged in as, and its address."""
    session = g.get("console_session")
    if session is not None and session.role:
        return Actor(session.role, "console", client=client_address())
    return Actor(g.get("api_role") or "unknown", "api", client=client_address())


def cooling_off(via: str) -> int | None:
    """Whole seconds this client must wait before it may try to log in again, or None
    when it may now. A refusal is logged."""
    left = _throttle().cooling_off(client_address())
    if left <= 0:
        return None
    seconds = math.ceil(left)
    log.warning(
        "%s login refused: %s is cooling off after too many failed logins (%ss left)",
        via,
        client_address(),
        seconds,
        extra={"client": client_address(), "via": via, "outcome": "cooling_off"},
    )
    return seconds


def succeeded(via: str, role: str) -> None:
    address = client_address()
    log.info(
        "%s login as %s from %s",
        via,
        role,
        address,
        extra={"client": address, "via": via, "role": role, "outcome": "ok"},
    )


def failed(via: str) -> None:
    """Count and log a wrong token from this client."""
    address = client_address()
    throttle = _throttle()
    count = throttle.failed(address)
    log.warning(
        "%s login failed from %s: wrong token (%d of %d allowed in a minute)",
        via,
        address,
        count,
        throttle.limit,
        extra={"client": address, "via": via, "outcome": "failed", "count": count},
    )


def _throttle() -> LoginThrottle:
    throttle = current_app.extensions.get(KEY)
    if throttle is None:
        throttle = current_app.extensions[KEY] = LoginThrottle(current_relay().store.client)
    return throttle
