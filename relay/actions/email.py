"""The ``email`` destination: deliver one rendered email through ``RELAY_SMTP_URL``.

:func:`prepare` renders the message from a job; :func:`send` sends it. Underneath,
:func:`parse_smtp_url` reads the URL into an :class:`SmtpTarget` and :func:`send_email`
sends one message over a fresh connection and returns an :class:`Outcome`, never raising
for a network or SMTP failure. SMTP 4xx and connection problems are transient, SMTP 5xx
permanent (see config/README.md: ``email``). The password never appears in an error text.
"""

from __future__ import annotations

import dataclasses
import email.policy
import email.utils
import re
import smtplib
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from relay.actions.base import Kind, Outcome, render_text, shorten
from relay.events import Job
from relay.rules import EmailDestination
from relay.settings import Settings

Mode = Literal["plain", "starttls", "tls"]

#: the port of ``smtp://`` (plain or STARTTLS) when the URL gives none
DEFAULT_SMTP_PORT = 25

#: the port of ``smtps://`` (implicit TLS) when the URL gives none
DEFAULT_SMTPS_PORT = 465

#: seconds, for connecting and for each SMTP command
DEFAULT_TIMEOUT = 10.0

#: the error of a rejected login: never the user name or password
AUTH_FAILED = "SMTP authentication failed"

# 7bit: non-ASCII bodies go quoted-printable or base64, so any server takes them (no 8BITMIME
# needed); the SMTP policy writes CRLF line ends as the wire wants.
POLICY = email.policy.SMTP.clone(cte_type="7bit")

#: RFC 5322 field names: printable ASCII but the colon
_HEADER_NAME = re.compile(r"[!-9;-~]+")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def prepare(destination: EmailDestination, job: Job, settings: Settings) -> dict[str, Any]:
    """The message to send: sender, recipients, rendered subject, body and html part."""
    return {
        "from": settings.mail_from,
        "to": list(destination.to),
        "cc": list(destination.cc),
        "subject": render_text(destination.subject, job),
        "body": render_text(destination.body, job),
        "html": render_text(destination.html, job) if destination.html else None,
    }


def send(
    destination: EmailDestination, prepared: dict[str, Any], job: Job, settings: Settings
) -> Outcome:
    """Send ``prepared`` through ``RELAY_SMTP_URL``, marked with the delivery id."""
    return send_email(
        parse_smtp_url(settings.smtp_url or ""),
        prepared["from"],
        prepared["to"],
        prepared["cc"],
        prepared["subject"],
        prepared["body"],
        prepared["html"],
        headers={"X-Relay-Delivery-Id": job["delivery_id"]},
    )


def check(destination: EmailDestination, settings: Settings) -> list[str]:
    """An email destination cannot work without an SMTP server."""
    if not settings.smtp_url:
        return ["email destinations need RELAY_SMTP_URL (smtp://user:pass@host:port)"]
    return []


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to send: ``mode`` is "plain", "starttls" or "tls" (implicit TLS)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    mode: Mode = "plain"


def parse_smtp_url(url: str) -> SmtpTarget:
    """Read ``smtp://user:pass@host:port`` (``?starttls=1`` for STARTTLS) or ``smtps://…``.

    The port defaults to 25 for smtp and 465 for smtps; user and password are URL-decoded
    (write ``%40`` for an ``@`` in them). A URL that cannot be used is a ValueError whose
    message never quotes the URL, so it cannot leak the password.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP URL: scheme must be smtp or smtps, got {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("SMTP URL: no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("SMTP URL: must not have a path or fragment")
    username, password = _credentials(parts.username, parts.password)
    return SmtpTarget(
        host=parts.hostname,
        port=_port(parts, DEFAULT_SMTPS_PORT if parts.scheme == "smtps" else DEFAULT_SMTP_PORT),
        username=username,
        password=password,
        mode=_mode(parts.scheme, parts.query),
    )


def _port(parts: SplitResult, default: int) -> int:
    try:
        port = parts.port
    except ValueError:  # its message quotes the netloc, password included: replace it
        raise ValueError("SMTP URL: port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("SMTP URL: port must be a number from 1 to 65535")
    return default if port is None else port


def _credentials(username: str | None, password: str | None) -> tuple[str | None, str | None]:
    if not username:
        if password:
            raise ValueError("SMTP URL: a password is given without a user name")
        return None, None
    return unquote(username), unquote(password or "")


def _mode(scheme: str, query: str) -> Mode:
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"starttls"})
    if unknown:
        raise ValueError(f"SMTP URL: unknown option(s) {', '.join(unknown)} (only starttls)")
    value = options.get("starttls", "0").lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"SMTP URL: starttls must be 1 or 0, got {value!r}")
    if scheme == "smtps":
        if value in _TRUE:
            raise ValueError("SMTP URL: starttls does not apply to smtps (already TLS)")
        return "tls"
    return "starttls" if value in _TRUE else "plain"


def build_message(
    mail_from: str,
    to: Sequence[str],
    cc: Sequence[str],
    subject: str,
    body: str,
    html: str | None = None,
    *,
    message_id_domain: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """The message :func:`send_email` sends: plain text, or multipart/alternative with html.

    Line breaks in ``subject`` become spaces: every one :meth:`str.splitlines` knows,
    U+2028, U+2029, vertical tab, form feed, ``\x1c``–``\x1e`` and NEL as well as CR and
    LF (the email package refuses a header holding any of them, so one in an event's text
    would make the message unsendable). ``headers`` are set last and replace any header of
    the same name. The Message-ID's domain defaults to the sender's domain. A header that
    cannot be written (a line break in its value, a colon in its name) is a ValueError.
    """
    message = EmailMessage(policy=POLICY)
    message["From"] = mail_from
    if to:
        message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = one_line(subject)
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=message_id_domain or _domain(mail_from))
    _set_headers(message, headers or {})
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def one_line(text: str) -> str:
    """``text`` with each line break (any :meth:`str.splitlines` separator) and the blanks
    around it made one space, and no blanks at either end."""
    return " ".join(line for line in (part.strip() for part in text.splitlines()) if line)


def _set_headers(message: EmailMessage, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"bad header name {name!r}")
        del message[name]
        message[name] = value


def _domain(address: str) -> str:
    """The domain of ``address`` ("Name <a@b>" or "a@b"), else "localhost" (never a DNS call)."""
    domain = email.utils.parseaddr(address)[1].rpartition("@")[2]
    return domain or "localhost"


def send_email(
    target: SmtpTarget,
    mail_from: str,
    to: Sequence[str],
    cc: Sequence[str],
    subject: str,
    body: str,
    html: str | None = None,
    *,
    message_id_domain: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Outcome:
    """Send one message (see :func:`build_message`) and classify what the server said.

    The envelope goes from the address in ``mail_from`` to every address in ``to`` and
    ``cc``. Logs in when ``target`` has a user name. ``ssl_context`` (default
    :func:`ssl.create_default_context`) is used for TLS and STARTTLS. ``timeout`` (seconds)
    bounds the connect and each command.

    "ok" when the server took the message for at least one recipient (``error`` then lists
    any refused ones: retrying would send the others a duplicate). Connection problems,
    timeouts and 4xx replies are transient, 5xx replies permanent; a rejected login is
    permanent with the error "SMTP authentication failed". A message that cannot be built
    (no recipient, a header with a line break) is permanent and nothing is sent.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    started = time.monotonic()
    recipients = [r for r in (_address(a) for a in (*to, *cc)) if r]
    try:
        if not recipients:
            raise ValueError("no recipients")
        message = build_message(
            mail_from, to, cc, subject, body, html,
            message_id_domain=message_id_domain, headers=headers,
        )  # fmt: skip
    except ValueError as exc:
        return Outcome("permanent", error=shorten(f"invalid message: {exc}"))
    outcome = _attempt(target, message, _address(mail_from), recipients, timeout, ssl_context)
    return dataclasses.replace(outcome, latency=time.monotonic() - started)


def _address(text: str) -> str:
    return email.utils.parseaddr(text)[1] or text.strip()


def _attempt(
    target: SmtpTarget,
    message: EmailMessage,
    sender: str,
    recipients: list[str],
    timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> Outcome:
    try:
        refused = _transmit(target, message, sender, recipients, timeout, ssl_context)
    except (smtplib.SMTPException, OSError, UnicodeError) as exc:
        return _failure(exc, timeout)
    if refused:
        return Outcome("ok", status=250, error=_refused_text(refused, len(recipients)))
    return Outcome("ok", status=250)


def _transmit(
    target: SmtpTarget,
    message: EmailMessage,
    sender: str,
    recipients: list[str],
    timeout: float,
    ssl_context: ssl.SSLContext | None,
) -> dict[str, tuple[int, bytes]]:
    """Connect, maybe STARTTLS and log in, send; the refused recipients (SMTP raises the rest)."""
    context = ssl_context or (ssl.create_default_context() if target.mode != "plain" else None)
    smtp = _connect(target, timeout, context)
    try:
        if target.mode == "starttls":
            smtp.starttls(context=context)
        if target.username:
            smtp.login(target.username, target.password or "")
        refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
    except BaseException:
        smtp.close()  # the session is in an unknown state: no QUIT, just hang up
        raise
    _quit(smtp)
    return refused


class _ClosingSMTP(smtplib.SMTP):
    """smtplib.SMTP whose connect closes the socket when the greeting fails.

    The stock class connects in ``__init__`` and leaves the socket open if the greeting
    times out, with no object left to close it.
    """

    def connect(self, host: str = "localhost", port: int = 0, source_address: Any = None) -> Any:
        try:
            return super().connect(host, port, source_address)
        except BaseException:
            self.close()
            raise


class _ClosingSMTP_SSL(_ClosingSMTP, smtplib.SMTP_SSL):
    pass


def _connect(target: SmtpTarget, timeout: float, context: ssl.SSLContext | None) -> smtplib.SMTP:
    if target.mode == "tls":
        return _ClosingSMTP_SSL(target.host, target.port, timeout=timeout, context=context)
    return _ClosingSMTP(target.host, target.port, timeout=timeout)


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye after a sent message; a failure here must not turn "sent" into a retry."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _failure(exc: smtplib.SMTPException | OSError | UnicodeError, timeout: float) -> Outcome:
    """The outcome of an exception raised while talking to the server."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return _auth_failure(exc.smtp_code)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _all_refused(exc.recipients)
    if isinstance(exc, smtplib.SMTPResponseException):  # sender refused, data, helo, connect
        return _reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Outcome("permanent", error=shorten(f"SMTP server does not support it: {exc}"))
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        if isinstance(exc.__context__, TimeoutError):  # smtplib wraps a timed-out read
            return Outcome("transient", error=f"timeout after {timeout:g}s")
        return Outcome("transient", error="SMTP server disconnected")
    if isinstance(exc, ssl.SSLCertVerificationError):  # a setup to fix, not a passing glitch
        return Outcome("permanent", error=shorten(f"TLS: {exc.verify_message}"))
    if isinstance(exc, TimeoutError):
        return Outcome("transient", error=f"timeout after {timeout:g}s")
    if isinstance(exc, OSError):
        return Outcome("transient", error=shorten(f"connection failed: {exc}"))
    if isinstance(exc, UnicodeError):  # its text could quote a character of the password
        return Outcome("permanent", error="SMTP cannot send a non-ASCII user name or password")
    # smtplib's own fixed texts, e.g. "No suitable authentication method found."
    return Outcome("permanent", error=shorten(f"SMTP: {exc}"))


def _auth_failure(code: int) -> Outcome:
    if 400 <= code < 500:  # 454: the server cannot check credentials just now
        return Outcome("transient", status=code, error=f"{AUTH_FAILED} (temporary)")
    return Outcome("permanent", status=code, error=AUTH_FAILED)


def _reply(code: int, text: bytes | str) -> Outcome:
    return Outcome(_kind(code), status=code, error=shorten(f"SMTP {code}: {_text(text)}"))


def _all_refused(recipients: Mapping[str, tuple[int, bytes]]) -> Outcome:
    """Every recipient refused: transient if any refusal is 4xx (nobody got a copy yet)."""
    codes = [code for code, _ in recipients.values()]
    code = next((c for c in codes if 400 <= c < 500), max(codes, default=550))
    error = shorten(f"SMTP {code}: all recipients refused: {_listing(recipients)}")
    return Outcome(_kind(code), status=code, error=error)


def _refused_text(refused: Mapping[str, tuple[int, bytes]], total: int) -> str:
    return shorten(f"{len(refused)} of {total} recipients refused: {_listing(refused)}")


def _listing(recipients: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{a} ({code} {_text(text)})" for a, (code, text) in recipients.items())


def _kind(code: int) -> Kind:
    """SMTP reply classes: 2xx ok, 4xx transient, 5xx (and anything odd) permanent."""
    if 200 <= code < 400:
        return "ok"
    if 400 <= code < 500 or code == -1:  # -1: smtplib's code for a garbled reply
        return "transient"
    return "permanent"


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())
