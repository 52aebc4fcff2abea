"""The ``http`` destination: deliver one rendered body and classify what happened.

:func:`prepare` renders the request (headers, body) from a job; :func:`send` sends it
with :func:`send_http`, which never raises for a delivery failure and returns an
:class:`Outcome`. Redirects are never followed, response bodies are read up to
:data:`MAX_RESPONSE_BYTES`, and every request carries ``webhook-id`` (the stable delivery
id receivers dedupe on). :func:`exchange` is the one request the Slack and SMS actions
share.

A destination with ``tls`` is sent through its own session (:mod:`relay.actions.sessions`,
:mod:`relay.actions.tls`); one with ``auth: {oauth2: …}`` carries ``Authorization: Bearer``
with its token (:mod:`relay.actions.oauth2`), and a 401 gets the token fetched again and the
request sent once more.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from relay import __version__, tracing
from relay.actions import oauth2, sessions, tls
from relay.actions.base import (
    Outcome,
    classify_http,
    parse_retry_after,
    render_payload,
    render_text,
    shorten,
)
from relay.actions.sessions import get_session, session_for
from relay.actions.signing import standard_webhooks_signer
from relay.errors import ConfigError
from relay.events import Job
from relay.rules import HttpDestination, Structured, Template, TemplateError
from relay.rules.http_auth import OAuth2
from relay.rules.payloads import json_required
from relay.settings import Settings

#: the methods an http destination may use
METHODS: frozenset[str] = frozenset({"POST", "PUT", "PATCH"})

#: seconds, for connecting and for each read
DEFAULT_TIMEOUT = 10.0

#: bytes of a response body relay reads at most (the rest is dropped unread)
MAX_RESPONSE_BYTES = 64 * 1024

#: characters of a response body quoted in an outcome's error
MAX_ERROR_BODY_CHARS = 200

USER_AGENT = f"relay/{__version__} (+webex-connect-relay)"

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

#: ``signer(delivery_id, timestamp, body) -> extra headers`` (Standard Webhooks, later)
Signer = Callable[[str, int, bytes], Mapping[str, str]]


def prepare(destination: HttpDestination, job: Job, settings: Settings) -> dict[str, Any]:
    """The request to send: method, URL, rendered headers, Content-Type and body text.

    A template body that must be JSON (a JSON Content-Type header, or written as a JSON
    object or array) and does not render to JSON is a :class:`TemplateError`: a permanent
    failure, nothing sent.
    """
    headers = {name: render_text(value, job) for name, value in destination.headers.items()}
    body, kind = http_body(destination, job)
    if isinstance(destination.body, Template):
        _check_json(destination.body, body, headers)
    return {
        "method": destination.method,
        "url": destination.url,
        "headers": headers,
        "content_type": content_type_for(kind, body),
        "body": body.decode("utf-8", "replace"),
    }


def http_body(destination: HttpDestination, job: Job) -> tuple[bytes, str]:
    """The request body and its kind (``event``, ``raw``, ``structured`` or ``template``).

    A fallback's delivery (a job with a ``failure``) sends ``body: event`` as the event
    plus ``failure``: what the dead-lettered delivery was and why it failed."""
    body, event = destination.body, job["event"]
    if isinstance(body, Template):
        return render_text(body, job).encode(), "template"
    if isinstance(body, Structured):
        return _json(render_payload(body, job)), "structured"
    if body == "raw":
        return _json(event["raw"]), "raw"
    failure = job.get("failure")
    return _json({**event, "failure": failure} if failure else event), "event"


def _check_json(template: Template, body: bytes, headers: Mapping[str, str]) -> None:
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    reason = json_required(template.source, content_type)
    if reason is None:
        return
    try:
        json.loads(body)
    except ValueError as exc:
        raise TemplateError(f"rendered body is not valid JSON ({reason}): {exc}") from None


def _json(value: object) -> bytes:
    """Compact UTF-8 JSON; \\u escapes only for text UTF-8 cannot carry (lone surrogates)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def send(
    destination: HttpDestination, prepared: dict[str, Any], job: Job, settings: Settings
) -> Outcome:
    """Send ``prepared`` once, signed when the destination says ``sign``, through its own
    TLS when it has ``tls``, with its OAuth2 token when it has ``auth`` (a 401 refreshes the
    token and sends once more)."""
    started = time.monotonic()
    try:
        session = session_for(destination)
    except ConfigError as exc:  # its PEMs were not checked at load (rules loaded without checks)
        return Outcome("permanent", error=str(exc))
    signer = standard_webhooks_signer(destination.sign.secret) if destination.sign else None

    def attempt(headers: Mapping[str, str]) -> Outcome:
        return send_http(
            prepared["url"],
            prepared["body"].encode(),
            delivery_id=job["delivery_id"],
            method=prepared["method"],
            headers=headers,
            content_type=prepared["content_type"],
            timeout=destination.timeout,
            signer=signer,
            session=session,
            certificates_checked=destination.tls is not None,
        )

    options = destination.auth
    if options is None:
        return attempt(prepared["headers"])
    outcome = oauth2.authorized(
        destination.name,
        options,
        prepared["headers"],
        attempt,
        lambda: fetch_token(options, destination.timeout),
    )
    return dataclasses.replace(outcome, latency=time.monotonic() - started)


def fetch_token(options: OAuth2, timeout: float) -> oauth2.Token | Outcome:
    """A token from ``options.token_url`` (through the shared session), or the outcome of
    failing to get one (see :func:`relay.actions.oauth2.token_of`)."""
    body, headers = oauth2.token_request(options)
    answer = exchange("POST", options.token_url, body, headers, timeout, quiet=True)
    if isinstance(answer, Outcome):
        return oauth2.failure(answer.kind, answer.error or answer.kind)
    if 300 <= answer.status < 400:
        return oauth2.failure("permanent", f"HTTP {answer.status}: redirect not followed")
    return oauth2.token_of(answer.status, answer.headers, answer.body)


def check(destination: HttpDestination, settings: Settings) -> list[str]:
    """Whether the destination's ``tls`` PEMs make a TLS context (at load, not at the first
    delivery); nothing an http destination needs comes from the settings."""
    return tls.problems(destination.tls) if destination.tls is not None else []


def content_type_for(body_kind: str, body: bytes) -> str:
    """Content-Type for a body rendered as ``body_kind`` (see :func:`http_body`).

    Event, raw and structured bodies are JSON; a template body is JSON when its text parses
    as JSON, otherwise UTF-8 plain text.
    """
    if body_kind in ("event", "raw", "structured"):
        return JSON
    try:
        json.loads(body)
    except ValueError:  # covers JSONDecodeError and UnicodeDecodeError
        return TEXT
    return JSON


def send_http(
    url: str,
    body: bytes,
    *,
    delivery_id: str,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    content_type: str = JSON,
    timeout: float = DEFAULT_TIMEOUT,
    signer: Signer | None = None,
    session: requests.Session | None = None,
    certificates_checked: bool = False,
) -> Outcome:
    """Send ``body`` to ``url`` once and classify the answer; never raises for the network.

    ``headers`` are the destination's own (rendered strings); a ``Content-Type`` among
    them overrides ``content_type``. relay adds ``User-Agent`` and ``webhook-id:
    <delivery_id>``, while traces are on the attempt's ``traceparent`` (and
    ``tracestate``), then whatever ``signer`` returns. ``timeout`` (seconds) bounds the
    connect, each read, and the whole body read. ``session`` defaults to this process's
    shared one (:func:`get_session`). ``certificates_checked``: the destination has ``tls``
    of its own, and a certificate refused in the handshake is permanent (else transient: a
    receiver's certificate being renewed is worth the retries). A bad method or timeout is
    a ValueError.
    """
    method = _checked_method(method)
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    sent = _request_headers(headers, content_type, delivery_id, body, signer)
    started = time.monotonic()
    answer = exchange(
        method, url, body, sent, timeout, session, certificates_checked=certificates_checked
    )
    outcome = _outcome_of(answer) if isinstance(answer, Answer) else answer
    return dataclasses.replace(outcome, latency=time.monotonic() - started)


def _checked_method(method: str) -> str:
    upper = method.upper()
    if upper not in METHODS:
        raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}, got {method!r}")
    return upper


def _request_headers(
    headers: Mapping[str, str] | None,
    content_type: str,
    delivery_id: str,
    body: bytes,
    signer: Signer | None,
) -> CaseInsensitiveDict[str]:
    sent: CaseInsensitiveDict[str] = CaseInsensitiveDict({"Content-Type": content_type})
    sent.update(headers or {})
    sent["User-Agent"] = USER_AGENT
    sent["webhook-id"] = delivery_id
    tracing.inject(sent)  # traceparent: the receiver's own trace continues the attempt's
    if signer is not None:  # signs the id, the time and the body: not the headers
        sent.update(signer(delivery_id, int(time.time()), body))
    return sent


@dataclass(frozen=True)
class Answer:
    """What a server answered: status, headers, and at most MAX_RESPONSE_BYTES of body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("Retry-After")


def exchange(
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    session: requests.Session | None = None,
    *,
    quiet: bool = False,
    certificates_checked: bool = False,
) -> Answer | Outcome:
    """One request: the server's :class:`Answer`, or the :class:`Outcome` of getting none.

    Never follows redirects; ``timeout`` bounds the connect, each read and the body read.
    With ``quiet`` an invalid URL or header is reported without quoting it (for URLs and
    headers that carry secrets: Slack webhooks, API keys).
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    deadline = time.monotonic() + timeout
    sent = {**headers, "User-Agent": USER_AGENT}
    try:
        with sessions.send(session or get_session(), method, url, body, sent, timeout) as response:
            return Answer(response.status_code, response.headers, _read_capped(response, deadline))
    except requests.Timeout:  # before ConnectionError: ConnectTimeout is both
        return Outcome("transient", error=f"timeout after {timeout:g}s")
    except requests.ConnectionError as exc:
        reason = _root_os_error(exc)
        if isinstance(reason, ssl.SSLError):
            outcome = tls.outcome_of(reason)
            if outcome.kind == "permanent" and not certificates_checked:
                outcome = dataclasses.replace(outcome, kind="transient")  # see send_http
            return outcome
        return Outcome("transient", error=_connection_error_text(exc))
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidHeader,
        UnicodeError,
    ) as exc:
        if quiet:  # their texts quote the value
            return Outcome("permanent", error="invalid URL or header value (not sent)")
        return Outcome("permanent", error=shorten(f"invalid request: {exc}"))
    except requests.RequestException as exc:
        return Outcome("transient", error=shorten(f"{type(exc).__name__}: {exc}"))


def _read_capped(response: requests.Response, deadline: float) -> bytes:
    """Up to MAX_RESPONSE_BYTES of the body, stopping early at ``deadline`` (monotonic).

    The status is already known, so a body that breaks off or stalls only shortens the
    error text (a partly read 8 KiB chunk is dropped with it).
    """
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(chunk_size=8192):
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_RESPONSE_BYTES or time.monotonic() > deadline:
                break
    except requests.RequestException:
        pass
    return b"".join(chunks)[:MAX_RESPONSE_BYTES]


def _outcome_of(answer: Answer) -> Outcome:
    status, body = answer.status, answer.body
    kind = classify_http(status, answer.headers)
    if kind == "ok":
        return Outcome("ok", status=status)
    if 300 <= status < 400:
        location = answer.headers.get("Location") or "(no Location header)"
        error = shorten(f"HTTP {status}: redirect to {location} not followed")
    else:
        snippet = _snippet(body)
        error = f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}"
    retry_after = None
    if kind == "transient":
        retry_after = parse_retry_after(answer.retry_after)
    return Outcome(kind, status=status, error=error, retry_after=retry_after)


def _snippet(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return shorten(text, MAX_ERROR_BODY_CHARS)


def _connection_error_text(exc: requests.ConnectionError) -> str:
    """One short line, e.g. "connection failed: [Errno 111] Connection refused".

    requests' own message is a nested repr of urllib3 objects; the root OSError says it all.
    """
    reason = _root_os_error(exc)
    return shorten(f"connection failed: {reason if reason else type(exc).__name__}")


def _root_os_error(exc: BaseException) -> OSError | None:
    """The innermost OSError under ``exc`` (requests and urllib3 chain and nest them)."""
    found: OSError | None = None
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            found = current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return found
