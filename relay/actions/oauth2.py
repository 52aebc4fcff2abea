"""OAuth2 client credentials (RFC 6749 4.4) for http destinations: the token request, what
the token endpoint's answer comes to, and one token per destination per process.

:class:`Tokens` keeps each destination's token until shortly before it expires
(:data:`MAX_MARGIN`), fetching it once however many threads need it at the same moment:
they wait on the destination's lock for that one fetch, and share its failure too. The
requests themselves are made by :mod:`relay.actions.http`; nothing here logs or quotes the
client secret or a token.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote_plus, urlencode

from relay.actions.base import Outcome, classify_http, parse_retry_after, shorten
from relay.rules.http_auth import OAuth2
from relay.rules.masking import hidden, hide

#: seconds before its expiry a token is no longer used: this, or a tenth of its lifetime
#: when that is shorter (a token of 2 s is used for 1.8 s)
MAX_MARGIN = 30.0

PREFIX = "oauth2 token: "
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Token:
    """An access token, used until ``expires_at`` (time.monotonic(); None: until a
    destination refuses it)."""

    value: str = field(repr=False)
    expires_at: float | None = None

    def fresh(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def token_request(options: OAuth2) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a client credentials request: the client authenticated with
    HTTP Basic (client_secret_basic: id and secret form-encoded first, RFC 6749 2.3.1)."""
    form = {"grant_type": "client_credentials"}
    if options.scope:
        form["scope"] = options.scope
    if options.audience:
        form["audience"] = options.audience
    pair = f"{quote_plus(options.client_id)}:{quote_plus(options.client_secret)}"
    headers = {
        "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    }
    return urlencode(form).encode(), headers


def token_of(
    status: int, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> Token | Outcome:
    """The token endpoint's answer: a :class:`Token`, or the :class:`Outcome` of the attempt
    that needed it: 5xx and 429 transient, 400, 401 and the rest permanent, naming the
    endpoint's ``error`` and ``error_description``."""
    kind = classify_http(status, headers)
    if kind != "ok":
        retry_after = parse_retry_after(headers.get("Retry-After")) if kind == "transient" else None
        return Outcome(kind, status=status, error=_refusal(status, body), retry_after=retry_after)
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    value = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value:
        return failure("permanent", "the answer holds no access_token")
    token_type = answer.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        return failure("permanent", f"token_type {_printable(str(token_type))!r} is not Bearer")
    return Token(value, _expiry(answer.get("expires_in"), time.monotonic() if now is None else now))


def _expiry(expires_in: object, now: float) -> float | None:
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in)  # some servers send it as a string
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
        return None
    lifetime = max(float(expires_in), 0.0)
    return now + lifetime - min(MAX_MARGIN, lifetime / 10)


def _refusal(status: int, body: bytes) -> str:
    """``oauth2 token: 401 invalid_client: Client authentication failed``, or the status."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, str) or not error.strip():
        return f"{PREFIX}HTTP {status}"
    text = f"{PREFIX}{status} {_printable(error)}"
    description = answer.get("error_description")
    if isinstance(description, str) and description.strip():
        text += f": {_printable(description)}"
    return shorten(text)


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub(" ", text).strip()


def failure(kind: str, what: str) -> Outcome:
    """An outcome of the token request that got no answer (or no token) from the endpoint."""
    return Outcome(
        "permanent" if kind == "permanent" else "transient", error=shorten(PREFIX + what)
    )


def without_secrets(outcome: Outcome, *secrets: str | None) -> Outcome:
    """``outcome`` with every one of ``secrets`` written ``****`` in its error text."""
    if not outcome.error:
        return outcome
    forms = hidden([secret for secret in secrets if secret])
    error = hide(outcome.error, forms)
    return outcome if error == outcome.error else dataclasses.replace(outcome, error=error)


Fetch = Callable[[], "Token | Outcome"]


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    token: Token | None = None
    failed: Outcome | None = None
    failed_at: float = 0.0


class Tokens:
    """One token per destination in this process: by its name and options (the rules in
    force and older ones still finishing their deliveries may differ)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, OAuth2], _Entry] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def get(
        self, name: str, options: OAuth2, fetch: Fetch, refused: str | None = None
    ) -> str | Outcome:
        """The token for destination ``name``: the one held while fresh (and not the one a
        destination just ``refused``), else one ``fetch`` gets, or its failure. Threads that
        ask at once wait for one fetch; a failed fetch answers every thread that was waiting."""
        asked = time.monotonic()
        entry = self._entry(name, options)
        with entry.lock:
            token = entry.token
            if token is not None and token.value != refused and token.fresh(time.monotonic()):
                return token.value
            if entry.failed is not None and entry.failed_at >= asked:
                return entry.failed
            got = fetch()
            if isinstance(got, Outcome):
                entry.token, entry.failed, entry.failed_at = None, got, time.monotonic()
                return got
            entry.token, entry.failed = got, None
            return got.value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _entry(self, name: str, options: OAuth2) -> _Entry:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's locks may be held
                self._entries.clear()
                self._pid = os.getpid()
            entry = self._entries.get((name, options))
            if entry is None:
                entry = self._entries[name, options] = _Entry()
            return entry


#: this process's tokens
TOKENS = Tokens()


def authorized(
    name: str,
    options: OAuth2,
    headers: Mapping[str, str],
    attempt: Callable[[Mapping[str, str]], Outcome],
    fetch: Fetch,
) -> Outcome:
    """``attempt(headers)`` with ``Authorization: Bearer`` and destination ``name``'s token;
    after a 401, once more with a token fetched again (a second 401 is classified as any).
    Neither the secret nor a token is in the outcome's error text."""
    refused: str | None = None
    for _ in range(2):
        token = TOKENS.get(name, options, fetch, refused)
        if isinstance(token, Outcome):
            return without_secrets(token, options.client_secret, refused)
        outcome = attempt({**headers, "Authorization": f"Bearer {token}"})
        outcome = without_secrets(outcome, options.client_secret, token)
        if outcome.status != 401:
            break
        refused = token
    return outcome
