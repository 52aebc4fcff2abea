"""The keep-alive ``requests`` sessions of a process: one shared by every destination, and
one more for each http destination with its own ``tls`` (its adapter, and so its pool of
connections, uses that destination's context alone). Each is made on first use, and anew
in a forked child (the parent's sockets are never reused).

:func:`send` sends one request through a session's adapter directly: the request
prepared by requests' own steps (method, URL, headers, body, with their checks), the
session's default headers under the caller's, never a redirect followed, no cookie kept
or sent, no hooks. ``Session.request`` also merges the session's cookies, auth, hooks
and environment settings into every request and looks up where a redirect would go,
which relay never uses and which cost about a tenth of a worker's CPU per delivery.
With proxy variables in the environment it is ``Session.request`` (they apply).
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.request
from collections.abc import Mapping

import requests
from requests.adapters import HTTPAdapter

from relay.actions import tls
from relay.rules import HttpDestination
from relay.rules.http_auth import Tls

#: connections kept per destination host and process (deliver workers use an I/O pool)
DEFAULT_POOL_MAXSIZE = 32

_session: requests.Session | None = None
_own: dict[str, tuple[Tls, requests.Session]] = {}  #: destination name → its TLS, session
_session_pid: int | None = None
_session_lock = threading.Lock()


def get_session() -> requests.Session:
    """This process's shared Session: created on first use, and anew in a forked child."""
    global _session
    with _session_lock:
        _forget_parent()
        if _session is None:
            _session = _new_session(HTTPAdapter(pool_maxsize=DEFAULT_POOL_MAXSIZE, max_retries=0))
        return _session


def session_for(destination: HttpDestination) -> requests.Session:
    """The Session to send to ``destination`` with: its own when it has ``tls`` (made again
    when a reload changes its ``tls``), else the shared one. ConfigError when its TLS
    context cannot be built."""
    if destination.tls is None:
        return get_session()
    with _session_lock:
        _forget_parent()
        held = _own.get(destination.name)
        if held is not None and held[0] == destination.tls:
            return held[1]
        adapter = tls.ContextAdapter(
            tls.context_for(destination.tls), pool_maxsize=DEFAULT_POOL_MAXSIZE, max_retries=0
        )
        session = _new_session(adapter)
        if held is not None:
            held[1].close()
        _own[destination.name] = (destination.tls, session)
        return session


def close_session() -> None:
    """Close this process's Sessions (worker shutdown, tests); the next send reopens."""
    global _session, _session_pid
    with _session_lock:
        for session in [_session, *(held for _, held in _own.values())]:
            if session is not None:
                session.close()
        _session, _session_pid = None, None
        _own.clear()


def _forget_parent() -> None:
    """In a forked child: close our copies of the parent's sockets, never reuse them."""
    global _session, _session_pid
    pid = os.getpid()
    if _session_pid == pid:
        return
    for session in [_session, *(held for _, held in _own.values())]:
        if session is not None:
            session.close()
    _session, _session_pid = None, pid
    _own.clear()


def _new_session(adapter: HTTPAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if not urllib.request.getproxies():
        # requests reads the proxy variables from the environment on every request (a third
        # of a delivery's CPU here); with none set, read the CA bundle variables once instead
        session.trust_env = False
        session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
    return session


def send(
    session: requests.Session,
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> requests.Response:
    """One request through ``session``'s adapter (module doc), its body streamed (the
    caller reads and closes it); raises what ``Session.request`` would."""
    if session.trust_env:  # proxies or netrc from the environment: requests' whole path
        return session.request(
            method,
            url,
            data=body,
            headers=dict(headers),
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
    prepared = requests.PreparedRequest()
    prepared.prepare_method(method)
    prepared.url = _prepared_url(url)
    # a later name replaces an earlier one in any case, as the session's merge does
    prepared.prepare_headers({**session.headers, **headers})
    prepared.prepare_body(body, None)
    adapter = session.get_adapter(prepared.url)
    verify = True if session.verify is None else session.verify
    return adapter.send(prepared, stream=True, timeout=timeout, verify=verify, cert=session.cert)


@functools.lru_cache(maxsize=1024)
def _prepared_url(url: str) -> str:
    """``url`` as requests prepares it (checked, IDNA, quoted): the same for every
    delivery to it; an invalid one raises each time (exceptions are not cached)."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    assert prepared.url is not None
    return prepared.url
