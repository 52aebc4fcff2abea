"""Who may use the console: the guard in front of every ``/ui`` path, login and logout.

- ``RELAY_ADMIN_TOKEN`` unset: every ``/ui`` path answers 404, as ``/api`` does.
- Not logged in: pages redirect to the login page; a POST is refused 401.
- Every POST carries the session's CSRF token (form field ``csrf_token`` or header
  ``X-CSRF-Token``): missing is 400, wrong is 403, each with a page saying so.
- A viewer session (``RELAY_VIEWER_TOKEN``) may read and try rules, never change state:
  views that do are wrapped in :func:`admin_only` (403), whatever the page shows.
- Logins are logged and throttled per client address (:mod:`relay.web.logins`): too many
  wrong tokens and the login form answers 429 for a while, whatever token it is given.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, g, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from relay.web import logins
from relay.web.console import session as sessions
from relay.web.console.blueprint import PREFIX, bp, in_console
from relay.web.context import current_relay

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_OPEN = ("console.login", "console.static")  #: endpoints served without a login

#: what a browser may do with console pages: nothing from elsewhere, no framing
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@bp.before_app_request
def _guard() -> ResponseReturnValue | None:
    """Runs for every request, so unknown /ui paths are guarded too."""
    if not in_console(request.path):
        return None
    settings = current_relay().settings
    if not settings.admin_token:
        raise NotFound()
    g.console_session = sessions.load(settings, request)
    if request.endpoint == "console.static":
        return None
    logged_in = g.console_session is not None and g.console_session.role is not None
    if request.method == "POST":
        if not logged_in and request.endpoint != "console.login":
            return message(401, "Not logged in", "Log in to the console first.")
        return _csrf_refusal()
    if not logged_in and request.endpoint not in _OPEN:
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    return None


def _csrf_refusal() -> ResponseReturnValue | None:
    session = g.console_session
    given = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if session is None:
        return message(
            400,
            "No console session",
            "This form has no session behind it (expired, or cookies are off): "
            "open the page again and retry.",
        )
    if not given:
        return message(
            400,
            "CSRF token missing",
            "The request carries no CSRF token: reload the page and try again.",
        )
    if not sessions.csrf_matches(session, given):
        return message(
            403,
            "CSRF token wrong",
            "The request's CSRF token is not this session's: reload the page and try again.",
        )
    return None


@bp.after_app_request
def _headers(response: Response) -> Response:
    if in_console(request.path):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def admin_only(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Refuse the view (403) to a read-only session; ``what`` names the action."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not g.console_session.admin:
                return message(
                    403,
                    "Read-only session",
                    f"A viewer cannot {what}: log in with the admin token.",
                )
            return view(*args, **kwargs)

        return guarded

    return wrap


def message(status: int, title: str, text: str) -> ResponseReturnValue:
    """An HTML page that says what went wrong, with ``status``."""
    return render_template("console/message.html", title=title, text=text), status


# -- login and logout -----------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    settings = current_relay().settings
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        fresh = g.console_session is None
        if fresh:
            g.console_session = sessions.new_session(None)
        response = make_response(render_template("console/login.html", next=target))
        # a session already there is not saved again: that would date it now, and a
        # login kept alive by visiting this page would never expire
        if fresh:
            sessions.save(settings, g.console_session, request, response)
        return response
    wait = logins.cooling_off("console")
    if wait:
        text = f"Too many failed logins from your address: try again in {wait} s."
        page = render_template("console/login.html", next=target, error=text)
        return page, 429, {"Retry-After": str(wait)}
    role = sessions.role_for(settings, request.form.get("token", ""))
    if role is None:
        logins.failed("console")
        page = render_template("console/login.html", next=target, error="Wrong token.")
        return page, 401
    logins.succeeded("console", role)
    g.console_session = sessions.new_session(role)
    moved = redirect(target)
    sessions.save(settings, g.console_session, request, moved)
    return moved


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    response = redirect(url_for("console.login"))
    sessions.clear(request, response)
    return response


def _safe_next(target: str | None) -> str:
    """Where to go after login: a console path of this site, never elsewhere."""
    if (
        target
        and (target == PREFIX or target.startswith(PREFIX + "/"))
        and "\\" not in target
        and target.isprintable()  # no line break a Location header cannot carry
        and not target.startswith(PREFIX + "/login")
    ):
        return target
    return PREFIX + "/"
