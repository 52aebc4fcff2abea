"""Who may post callbacks: the Webex Connect hub signature, HTTP Basic and an API-key header.

Each method is on when its settings are set; every method that is on must pass. The
header methods are checked first (no body is read for a caller without them), then the
hub signature over the raw body, before any JSON parsing::

    x-hub-signature: [sha256=|sha512=|sha1=]<hex HMAC of the raw body>

keyed with ``RELAY_WEBEX_HUB_SECRET``; SHA-256 or SHA-512 per
``RELAY_WEBEX_HUB_ALGORITHM`` (``auto``: by the length of the hex digest). The prefix, when
present, is only stripped: the configured algorithm (or the length) decides. Every
comparison is constant-time, and neither secrets nor bodies reach logs or error messages.

Failures are answered 401 ``{"error": "invalid_signature"}`` (signature) or
``{"error": "unauthorized"}`` (Basic, API key), counted in :attr:`IngestAuth.failures`.

With no method set the web tier does not start (:func:`unauthenticated_refusal`) unless
``RELAY_ALLOW_UNAUTHENTICATED=1`` says that anyone may post callbacks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import threading
from collections import Counter
from typing import Protocol

from relay.errors import IngestError, SettingsError, SignatureError, UnauthorizedError
from relay.settings import Settings

log = logging.getLogger("relay.ingest.auth")

SIGNATURE_HEADER = "x-hub-signature"
REALM = "relay"
AUTH_VARIABLES = ("RELAY_WEBEX_HUB_SECRET", "RELAY_INGEST_BASIC_AUTH", "RELAY_INGEST_API_KEY")
_DIGESTS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_BY_LENGTH = {64: "sha256", 128: "sha512"}  #: hex digits of each digest
_PREFIX = re.compile(r"^(?:sha1|sha256|sha512)=", re.IGNORECASE)
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class HeaderLookup(Protocol):
    """Request headers, as far as the checks read them (a dict, werkzeug's Headers)."""

    def get(self, key: str, /) -> str | None: ...


class IngestAuth:
    """The configured checks of one web app, and how often each kind of failure happened."""

    def __init__(
        self,
        hub_secret: str | None = None,
        hub_algorithm: str = "auto",
        basic_auth: str | None = None,
        api_key_header: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self._hub_key = hub_secret.encode() if hub_secret else None
        self._hub_algorithm = hub_algorithm
        self._basic = _digest(basic_auth.encode()) if basic_auth else None
        self._api_key_header = api_key_header
        self._api_key = _digest(api_key.encode()) if api_key else None
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestAuth:
        """The checks ``settings`` ask for; SettingsError when none is set, unless
        RELAY_ALLOW_UNAUTHENTICATED allows that (and RELAY_REQUIRE_AUTH does not forbid it)."""
        problem = unauthenticated_refusal(settings)
        if problem:
            raise problem
        return cls(
            settings.webex_hub_secret,
            settings.webex_hub_algorithm,
            settings.ingest_basic_auth,
            settings.ingest_api_key_header,
            settings.ingest_api_key,
        )

    @property
    def challenge(self) -> dict[str, str]:
        """Headers of a 401 for a failed Basic or API-key check."""
        return {"WWW-Authenticate": f'Basic realm="{REALM}"'} if self._basic else {}

    def check_headers(self, headers: HeaderLookup, peer: str | None) -> None:
        """UnauthorizedError unless Basic and the API key (those configured) are right."""
        if self._basic and not _equal(self._basic, _basic_credentials(headers)):
            self._reject(UnauthorizedError("basic credentials missing or wrong"), peer)
        if self._api_key and not _equal(
            self._api_key, _header_bytes(headers, self._api_key_header or "")
        ):
            self._reject(UnauthorizedError(f"{self._api_key_header} missing or wrong"), peer)

    def check_signature(self, headers: HeaderLookup, body: bytes, peer: str | None) -> None:
        """SignatureError unless ``x-hub-signature`` signs ``body`` (when a secret is set)."""
        if self._hub_key is None:
            return
        problem = self._signature_problem(headers.get(SIGNATURE_HEADER), body)
        if problem:
            self._reject(SignatureError(problem), peer)

    def _signature_problem(self, header: str | None, body: bytes) -> str | None:
        if not header:
            return f"{SIGNATURE_HEADER} missing"
        given = _PREFIX.sub("", header.strip(), count=1)
        if not _HEX.match(given):
            return f"{SIGNATURE_HEADER} is not a hex digest"
        algorithm = self._hub_algorithm
        if algorithm == "auto":
            algorithm = _BY_LENGTH.get(len(given), "")
            if not algorithm:
                return f"{SIGNATURE_HEADER} has {len(given)} hex digits, not 64 or 128"
        expected = hmac.new(self._hub_key or b"", body, _DIGESTS[algorithm]).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.lower().encode()):
            return f"{SIGNATURE_HEADER} does not match the body ({algorithm})"
        return None

    def _reject(self, error: IngestError, peer: str | None) -> None:
        with self._lock:
            self.failures[error.code] += 1
        log.warning("callback refused (%s) from %s: %s", error.code, peer or "?", error.detail)
        raise error


def refusal() -> str:
    """Why a process that requires callback auth will not start."""
    return f"set, but none of {', '.join(AUTH_VARIABLES)} is: callbacks would be unauthenticated"


def unauthenticated_refusal(settings: Settings) -> SettingsError | None:
    """Why the web tier must not start with ``settings``, or None.

    Safe by default: with no authentication method, callbacks are refused unless
    RELAY_ALLOW_UNAUTHENTICATED=1 (``relay up`` on a loopback address implies it);
    RELAY_REQUIRE_AUTH=1 refuses even then.
    """
    if settings.ingest_auth_configured:
        return None
    if settings.require_auth:
        return SettingsError("RELAY_REQUIRE_AUTH", refusal())
    if settings.allow_unauthenticated:
        return None
    return SettingsError(
        "RELAY_ALLOW_UNAUTHENTICATED",
        "not set, and none of RELAY_WEBEX_HUB_SECRET, RELAY_INGEST_BASIC_AUTH, "
        "RELAY_INGEST_API_KEY (with RELAY_INGEST_API_KEY_HEADER) is: callbacks would be "
        "unauthenticated; set one, or RELAY_ALLOW_UNAUTHENTICATED=1 to accept callbacks "
        "from anyone",
    )


def warning(settings: Settings) -> str | None:
    """The start-up warning for unauthenticated callbacks, or None when some auth is on."""
    if settings.ingest_auth_configured:
        return None
    return (
        "warning: webhook callbacks are not authenticated: anyone who can reach the URL can "
        f"post events (set {' or '.join(AUTH_VARIABLES)}; RELAY_REQUIRE_AUTH=1 refuses to start)"
    )


def _digest(value: bytes) -> bytes:
    # Comparing fixed-length digests keeps the secret's length out of the timing as well.
    return hashlib.sha256(value).digest()


def _equal(expected_digest: bytes, given: bytes | None) -> bool:
    return given is not None and hmac.compare_digest(expected_digest, _digest(given))


def _header_bytes(headers: HeaderLookup, name: str) -> bytes | None:
    """The header's bytes as sent (WSGI gives them as latin-1 text), or None when absent."""
    value = headers.get(name)
    return None if value is None else _to_bytes(value)


def _basic_credentials(headers: HeaderLookup) -> bytes | None:
    """``user:password`` bytes of an ``Authorization: Basic …`` header, or None."""
    scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(_to_bytes(token.strip()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _to_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:  # not from the wire (test clients): compare as UTF-8
        return value.encode("utf-8", "surrogatepass")
