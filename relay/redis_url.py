"""Where relay's Redis is: one server's URL, or the Sentinels that know which server is
the primary.

``redis://``, ``rediss://`` and ``unix://`` name one server (a managed endpoint that fails
over is one of these). ``redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]``
(``rediss+sentinel://`` for TLS to the Sentinels and the servers) names Sentinels: each
connection asks them for the current primary of SERVICE. The password in it is the data
servers'; Sentinels with a password of their own take ``RELAY_REDIS_SENTINEL_PASSWORD``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
PLAIN_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)  #: the data servers'
    tls: bool = False

    def without_secrets(self) -> str:
        """The URL with its password left out, fit for logs and messages."""
        scheme = SENTINEL_SCHEMES[1] if self.tls else SENTINEL_SCHEMES[0]
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"{scheme}://{hosts}/{self.service}/{self.db}"


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelURL:
    """The parts of a Sentinel URL; ValueError saying what is wrong (never echoing the
    password)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SENTINEL_SCHEMES)}")
    if "?" in rest or "#" in rest:
        raise ValueError("a Sentinel URL takes no query or fragment")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    sentinels = tuple(_address(item) for item in hosts.split(","))
    parts = path.split("/") if path else []
    if not parts or not parts[0]:
        raise ValueError("names no service: add /SERVICE after the Sentinels (e.g. /mymaster)")
    if len(parts) > 2 or not _SERVICE.fullmatch(parts[0]):
        raise ValueError("path must be /SERVICE or /SERVICE/DB (letters, digits, . _ -)")
    db = 0
    if len(parts) == 2 and parts[1]:
        if not parts[1].isdigit():
            raise ValueError(f"database {parts[1]!r} is not a number")
        db = int(parts[1])
    tls = scheme.lower() == SENTINEL_SCHEMES[1]
    return SentinelURL(sentinels, parts[0], db, username, password, tls)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:  # redis+sentinel://password@… is a common slip: the password alone
        raise ValueError("credentials must be written :PASSWORD@ or USER:PASSWORD@")
    return (unquote(user) or None), (unquote(password) or None)


def _address(item: str) -> tuple[str, int]:
    item = item.strip()
    if not item:
        raise ValueError("names no Sentinel host (expected HOST:PORT[,HOST:PORT…])")
    host, port = item, ""
    if item.startswith("["):
        host, _, after = item.partition("]")
        host += "]"
        if after and not after.startswith(":"):
            raise ValueError(f"Sentinel {item!r} is not [ADDRESS]:PORT")
        port = after[1:]
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not _HOST.fullmatch(host):
        raise ValueError(f"Sentinel host {host!r} is not a host name or address")
    if not port:
        return host.strip("[]"), DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Sentinel {item!r} has an invalid port")
    return host.strip("[]"), int(port)
