"""The console's session: a signed cookie saying who logged in, and the CSRF token.

The cookie holds ``{"role": "admin" | "viewer" | None, "csrf": …, "token": …}``, signed
with itsdangerous and dated: it is refused after :data:`SESSION_TTL` seconds (and the
browser drops it then too). A session with no role is the one the login page gives, so
that the login form carries a CSRF token as well.

The signing key is derived from ``RELAY_ADMIN_TOKEN``: rotating the admin token logs
everyone out. ``token`` is a short HMAC of the token the session logged in with, checked
on every request: rotating (or unsetting) ``RELAY_VIEWER_TOKEN`` logs the viewers out.

The cookie is HttpOnly and SameSite=Strict, and Secure when the request came over HTTPS
as the web server sees it (``request.is_secure``; relay adds no proxy trust of its own).

The same key (another salt) signs the notices an action leaves for the page it
redirects to (:func:`seal`): a link cannot make a page report an action that did not
happen.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response

from relay.settings import Settings

COOKIE = "relay_console"
SESSION_TTL = 12 * 3600  #: seconds a login lasts
ADMIN = "admin"
VIEWER = "viewer"
_KEY_LABEL = b"relay console session key v1"
_SALT = "relay.console.session"
_NOTICE_SALT = "relay.console.notice"


@dataclass(frozen=True)
class Session:
    role: str | None  #: ADMIN, VIEWER, or None before login
    csrf: str  #: the token every POST of this session carries

    @property
    def admin(self) -> bool:
        return self.role == ADMIN


def role_for(settings: Settings, given: str) -> str | None:
    """ADMIN, VIEWER or None for a token typed at the login page.

    Both tokens are compared every time, in constant time, so neither the answer's timing
    nor its length tells which (if any) nearly matched."""
    typed = _digest(given)
    admin = hmac.compare_digest(typed, _digest(settings.admin_token or ""))
    viewer = settings.viewer_token is not None and hmac.compare_digest(
        typed, _digest(settings.viewer_token)
    )
    if admin and settings.admin_token:
        return ADMIN
    return VIEWER if viewer else None


def new_session(role: str | None) -> Session:
    """A fresh session: a new CSRF token (never the one of the session before login)."""
    return Session(role, secrets.token_urlsafe(32))


def load(settings: Settings, request: Request) -> Session | None:
    """The session of ``request``'s cookie: None when missing, forged, expired, or made
    with a token that is no longer the one in force."""
    raw = request.cookies.get(COOKIE)
    if not raw or not settings.admin_token:
        return None
    try:
        data = _serializer(settings).loads(raw, max_age=SESSION_TTL)
    except BadSignature:  # SignatureExpired is one
        return None
    if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
        return None
    role = data.get("role")
    if role is None:
        return Session(None, data["csrf"])
    mark = _token_mark(settings, role) if role in (ADMIN, VIEWER) else None
    if mark is None or not hmac.compare_digest(mark, str(data.get("token"))):
        return None
    return Session(role, data["csrf"])


def save(settings: Settings, session: Session, request: Request, response: Response) -> None:
    """Set the cookie of ``session`` on ``response``."""
    data = {"role": session.role, "csrf": session.csrf}
    if session.role is not None:
        data["token"] = _token_mark(settings, session.role)
    response.set_cookie(
        COOKIE,
        _serializer(settings).dumps(data),
        max_age=SESSION_TTL,
        path="/ui",
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )


def clear(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path="/ui", secure=request.is_secure, httponly=True, samesite="Strict"
    )


def csrf_matches(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(_digest(session.csrf), _digest(given))


def seal(settings: Settings, text: str) -> str:
    """``text`` signed and dated, to carry in a redirect's query string (what an action
    did, shown by the page it leads to)."""
    return _serializer(settings, _NOTICE_SALT).dumps(text)


def unseal(settings: Settings, sealed: str | None, max_age: int) -> str | None:
    """The text :func:`seal` signed, if ``sealed`` is genuine and at most ``max_age``
    seconds old; else None (a forged or stale notice is not shown)."""
    if not sealed or not settings.admin_token:
        return None
    try:
        text = _serializer(settings, _NOTICE_SALT).loads(sealed, max_age=max_age)
    except BadSignature:
        return None
    return text if isinstance(text, str) else None


def _serializer(settings: Settings, salt: str = _SALT) -> URLSafeTimedSerializer:
    key = hmac.new(_bytes(settings.admin_token or ""), _KEY_LABEL, hashlib.sha256).digest()
    return URLSafeTimedSerializer(key, salt=salt)


def _token_mark(settings: Settings, role: str) -> str | None:
    token = settings.admin_token if role == ADMIN else settings.viewer_token
    if not token:
        return None
    mark = hmac.new(_bytes(settings.admin_token or ""), _bytes(f"{role}:{token}"), hashlib.sha256)
    return mark.hexdigest()[:32]


def _digest(text: str) -> bytes:
    # fixed-length digests: the comparison does not leak the token's length either
    return hashlib.sha256(_bytes(text)).digest()


def _bytes(text: str) -> bytes:
    # surrogatepass: values from the environment may hold some
    return text.encode("utf-8", "surrogatepass")
