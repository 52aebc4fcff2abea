"""An http destination's own TLS: its context (CAs, client certificate), the adapter that
makes requests use it, and what a failed handshake comes to.

:func:`context_for` builds one :class:`ssl.SSLContext` per ``tls`` option per process: the
destination's ``ca`` replaces the default CA bundle; its client certificate and key are
loaded from memory (``load_cert_chain`` reads files, so the PEMs are written to an
anonymous in-memory file, or where there is none to a 0600 file in a private 0700
directory removed at once). :func:`problems` is the load-time check of the same.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from relay.actions.base import Outcome, shorten
from relay.errors import ConfigError
from relay.rules.http_auth import Tls

#: ``ssl.SSLError.reason`` values that mean the peer refused a certificate (or the client
#: offered none): a setup to fix, not a passing glitch. A TLS 1.2 server refuses a missing
#: client certificate with handshake_failure.
REFUSALS = frozenset(
    {"CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA", "TLSV1_ALERT_ACCESS_DENIED",
     "SSLV3_ALERT_HANDSHAKE_FAILURE"}
)  # fmt: skip

_contexts: dict[Tls, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()
_SSL_NOISE = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$")


def context_for(tls: Tls) -> ssl.SSLContext:
    """The context of ``tls`` (built once per process); ConfigError naming the key at fault."""
    with _contexts_lock:
        context = _contexts.get(tls)
        if context is None:
            context = _contexts[tls] = _build(tls)
        return context


def problems(tls: Tls) -> list[str]:
    """What is wrong with ``tls``'s PEMs (empty when the context builds, or when they were
    not read: a candidate rules file)."""
    if not tls.complete:
        return []
    try:
        context_for(tls)
    except ConfigError as exc:
        return [str(exc)]
    return []


def _build(tls: Tls) -> ssl.SSLContext:
    if tls.ca is None:
        context = ssl.create_default_context(cafile=_default_bundle())
    else:
        try:  # these CAs alone: no default bundle is loaded beside them
            context = ssl.create_default_context(cadata=tls.ca.text)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"tls.ca: no certificate could be read ({_ssl_text(exc)})") from None
    if tls.client_cert is not None:
        cert = tls.client_cert.text or ""
        _check_certificate(cert)
        key = tls.client_key.text if tls.client_key is not None else None
        _load_chain(context, cert, key, "client_key" if tls.client_key else "client_cert")
    return context


def _default_bundle() -> str:
    """The CAs every other destination trusts: requests' (REQUESTS_CA_BUNDLE or certifi)."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return bundle or DEFAULT_CA_BUNDLE_PATH


_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)


def _check_certificate(pem: str) -> None:
    """The certificates of ``pem`` parse (load_cert_chain's own error says only PEM lib)."""
    blocks = _CERTIFICATE.findall(pem)
    if not blocks:
        raise ConfigError("tls.client_cert: holds no certificate (-----BEGIN CERTIFICATE-----)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata="\n".join(blocks))
    except (ssl.SSLError, ValueError) as exc:
        message = f"tls.client_cert: not a certificate ({_ssl_text(exc)})"
        raise ConfigError(message) from None


class _Encrypted(Exception):
    pass


def _no_password() -> str:
    raise _Encrypted  # never OpenSSL's prompt on the terminal


def _load_chain(context: ssl.SSLContext, cert: str, key: str | None, key_name: str) -> None:
    try:
        with contextlib.ExitStack() as files:
            certfile = files.enter_context(_private_file(cert))
            keyfile = files.enter_context(_private_file(key)) if key is not None else None
            context.load_cert_chain(certfile, keyfile, password=_no_password)
    except _Encrypted:
        raise ConfigError(f"tls.{key_name}: the key is encrypted: give it unencrypted") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"tls.{key_name}: the key does not match client_cert") from None
        raise ConfigError(f"tls.{key_name}: not a private key ({_ssl_text(exc)})") from None


@contextlib.contextmanager
def _private_file(text: str) -> Iterator[str]:
    """A path that reads ``text`` for as long as the block runs, and never after."""
    data = text.encode("ascii", "replace")
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("relay-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    folder = tempfile.mkdtemp(prefix="relay-tls-")  # 0700
    try:
        path = os.path.join(folder, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ssl_text(exc: BaseException) -> str:
    """``[SSL: REASON] what (_ssl.c:123)`` → ``what``."""
    text = getattr(exc, "strerror", None) or str(exc)
    return _SSL_NOISE.sub("", str(text)) or type(exc).__name__


def outcome_of(error: ssl.SSLError) -> Outcome:
    """What a TLS failure comes to: a refused certificate (the server's, or relay's own, or
    none offered) is permanent, e.g. ``tls: certificate verify failed: unable to get local
    issuer certificate`` or ``tls: tlsv13 alert certificate required``; anything else
    (the connection cut mid-handshake …) is transient."""
    reason = str(getattr(error, "reason", None) or "")
    refused = reason in REFUSALS or "CERTIFICATE" in reason
    return Outcome(
        "permanent" if refused else "transient", error=shorten(f"tls: {_ssl_text(error)}")
    )


class ContextAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections use ``ssl_context`` and nothing else: no CA bundle
    of requests' is added to it, whatever the session's ``verify`` says."""

    def __init__(self, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        self.ssl_context = ssl_context
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["ssl_context"] = self.ssl_context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self.ssl_context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> Any:
        host, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host, {"cert_reqs": "CERT_REQUIRED"}

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = conn.ca_cert_dir = None
        conn.cert_file = conn.key_file = None
