"""How an http destination proves who relay is: ``tls`` (a client certificate, and the CAs
the server's certificate is checked against) and ``auth: {oauth2: …}`` (OAuth2 client
credentials); what they hold and how a rules file's values are read into them.

A PEM value is either the PEM itself (text starting with ``-----BEGIN``, typically from
``${VAR}``) or an absolute file path, read when the rules load, so a missing or unreadable
file is a ``file:line`` error then, not a failure at the first delivery. Whether the PEMs
parse is checked at load too, by :mod:`relay.actions.tls`, which builds the TLS context. A
file read without the environment (a candidate rules file) reads no file it names.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from relay.errors import RuleValueError
from relay.rules.reader import FAILED, Key, Reader, string, url

Path = tuple[str | int, ...]

#: how a PEM value starts, and how one is told from a file path
PEM_BEGIN = "-----BEGIN"
#: bytes of a PEM file read at most (a bundle of a few hundred CAs is about 200 KiB)
MAX_PEM_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Pem:
    """One PEM value: ``source`` is the file it was read from, or ``inline``; ``text`` is
    the PEM, None when its file was not read (a candidate rules file)."""

    source: str
    text: str | None = field(default=None, repr=False)

    @property
    def has_private_key(self) -> bool:
        return self.text is not None and "PRIVATE KEY-----" in self.text


@dataclass(frozen=True)
class Tls:
    """An http destination's TLS: ``ca`` (replaces the default CA bundle), ``client_cert``
    and ``client_key`` (the key may be in ``client_cert``'s PEM instead)."""

    ca: Pem | None = None
    client_cert: Pem | None = None
    client_key: Pem | None = None

    @property
    def complete(self) -> bool:
        """True when every PEM given was read (False for a candidate's files)."""
        return all(
            pem.text is not None for pem in (self.ca, self.client_cert, self.client_key) if pem
        )


@dataclass(frozen=True)
class OAuth2:
    """OAuth2 client credentials (RFC 6749 4.4): a token from ``token_url``, asked for with
    HTTP Basic client authentication; ``scope`` and ``audience`` sent when set."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    audience: str | None = None


def read_tls(reader: Reader, path: Path, value: Any) -> Tls:
    """``tls: {ca, client_cert, client_key}``: a key needs its certificate, and a
    certificate without ``client_key`` must hold its key."""
    values = reader.fields(path, value, TLS_KEYS)
    if values is None:
        return FAILED  # type: ignore[no-any-return]  # FAILED stands in for any type
    tls = Tls(**values)
    if not values:
        raise RuleValueError("expected ca, client_cert or both client_cert and client_key")
    if tls.client_key and not tls.client_cert:
        raise RuleValueError("client_key needs client_cert")
    cert = tls.client_cert
    if cert and not tls.client_key and cert.text is not None and not cert.has_private_key:
        raise RuleValueError("client_cert holds no private key: add client_key")
    return tls


def _pem(reader: Reader, path: Path, value: Any) -> Pem:
    text = string(reader, path, value)
    if path in reader.doc.placeholders:  # read without the environment: <NAME>
        return Pem(text)
    if text.lstrip().startswith(PEM_BEGIN):
        return Pem("inline", text)
    if not os.path.isabs(text):
        shown = f", got {text!r}" if len(text) <= 200 and not any(c.isspace() for c in text) else ""
        raise RuleValueError(f"expected a PEM ({PEM_BEGIN} …) or an absolute file path{shown}")
    return Pem(text, _read_pem_file(text) if reader.files else None)


def _read_pem_file(path: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise RuleValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_PEM_BYTES:
        raise RuleValueError(f"{path}: more than {MAX_PEM_BYTES:,} bytes, not a PEM file")
    text = data.decode("ascii", "replace")
    if PEM_BEGIN not in text:
        raise RuleValueError(f"{path} holds no PEM (no {PEM_BEGIN} line)")
    return text


TLS_KEYS = {"ca": Key(_pem), "client_cert": Key(_pem), "client_key": Key(_pem)}


def read_auth(reader: Reader, path: Path, value: Any) -> OAuth2:
    """``auth: {oauth2: {token_url, client_id, client_secret, scope, audience}}``."""
    values = reader.fields(path, value, {"oauth2": Key(_oauth2, required=True)})
    if values is None:
        return FAILED  # type: ignore[no-any-return]  # FAILED stands in for any type
    oauth2: OAuth2 = values["oauth2"]
    return oauth2


def _oauth2(reader: Reader, path: Path, value: Any) -> OAuth2:
    values = reader.fields(path, value, OAUTH2_KEYS)
    return FAILED if values is None else OAuth2(**values)


def _token_url(reader: Reader, path: Path, value: Any) -> str:
    """An https:// URL; http:// only to a loopback host (127.0.0.0/8, ::1, localhost)."""
    text = url(reader, path, value)
    if path in reader.doc.placeholders:
        return text
    parts = urlsplit(text)
    if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
        raise RuleValueError(
            "must be https:// (http:// only to a loopback host: 127.0.0.0/8, ::1, localhost), "
            f"got {text!r}"
        )
    return text


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _scope(reader: Reader, path: Path, value: Any) -> str:
    """One scope string (space-separated scopes), or a list of scopes."""
    if isinstance(value, list):
        return " ".join(string(reader, path + (i,), item) for i, item in enumerate(value))
    return string(reader, path, value)


OAUTH2_KEYS = {
    "token_url": Key(_token_url, required=True),
    "client_id": Key(string, required=True),
    "client_secret": Key(string, required=True),
    "scope": Key(_scope),
    "audience": Key(string),
}


def check_http_auth(reader: Reader, path: Path, values: Mapping[str, Any]) -> bool:
    """What ``tls`` and ``auth`` ask of the rest of an http destination: ``tls`` an https://
    ``url``, ``auth`` no ``Authorization`` header of its own. False after reporting."""
    ok = True
    target = values.get("url")
    if (
        values.get("tls")
        and isinstance(target, str)
        and path + ("url",) not in reader.doc.placeholders
    ):
        if urlsplit(target).scheme != "https":
            reader.error(path + ("tls",), "tls needs an https:// url")
            ok = False
    for name in values.get("headers") or {} if values.get("auth") else ():
        if name.lower() == "authorization":
            message = "auth.oauth2 sets Authorization: leave this header out"
            reader.error(path + ("headers", name), message)
            ok = False
    return ok
