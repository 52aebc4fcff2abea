"""A real local SMTP server for tests (aiosmtpd): records every message, answers from a script.

::

    with SmtpServer() as server:                   # listens on 127.0.0.1, a free port
        server.script("data", "451 4.3.0 try later")
        send_email(server.target(), ...)           # -> transient
        send_email(server.target(), ...)           # -> ok, recorded in server.messages

Scripted replies are consumed in order, one per RCPT or DATA command of their stage; with
none queued the server accepts. ``credentials`` turns on AUTH (PLAIN, LOGIN) without TLS;
``tls`` ("starttls" or "implicit") with ``cert`` (certificate file, key file) turns on TLS.
"""

from __future__ import annotations

import email.policy
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from relay.actions.email import SmtpTarget

Stage = Literal["rcpt", "data"]


@dataclass(frozen=True)
class Received:
    """One accepted message: the envelope and the bytes as they came over the wire."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes

    def message(self) -> EmailMessage:
        lines = self.content.replace(b"\r\n", b"\n")  # the parser keeps CRLF in the content
        parsed = BytesParser(policy=email.policy.default).parsebytes(lines)
        assert isinstance(parsed, EmailMessage)
        return parsed


class SmtpServer:
    """An aiosmtpd Controller on 127.0.0.1 that records messages and plays a script."""

    def __init__(
        self,
        credentials: tuple[str, str] | None = None,
        tls: Literal["starttls", "implicit"] | None = None,
        cert: tuple[str, str] | None = None,
    ) -> None:
        self.credentials = credentials
        self.tls = tls
        self._replies: dict[Stage, deque[str]] = {"rcpt": deque(), "data": deque()}
        self._messages: list[Received] = []
        self._lock = threading.Lock()
        self._controller = _FreePortController(_Handler(self), **self._options(tls, cert))

    def _options(self, tls: str | None, cert: tuple[str, str] | None) -> dict[str, Any]:
        options: dict[str, Any] = {"hostname": "127.0.0.1"}
        if self.credentials is not None:
            options.update(authenticator=self._authenticate, auth_require_tls=False)
        if tls is not None:
            assert cert is not None, "TLS needs cert=(certfile, keyfile)"
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*cert)
            options["ssl_context" if tls == "implicit" else "tls_context"] = context
        return options

    def __enter__(self) -> SmtpServer:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()

    @property
    def port(self) -> int:
        return self._controller.port

    def target(self, **changes: Any) -> SmtpTarget:
        """An SmtpTarget for this server (plain, or the server's TLS mode), with ``changes``."""
        mode = {"starttls": "starttls", "implicit": "tls", None: "plain"}[self.tls]
        fields: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "mode": mode}
        return SmtpTarget(**{**fields, **changes})

    def script(self, stage: Stage, *replies: str) -> None:
        """Queue ``replies`` (e.g. "550 5.1.1 no such user") for the next ``stage`` commands."""
        with self._lock:
            self._replies[stage].extend(replies)

    @property
    def messages(self) -> list[Received]:
        """A copy of every accepted message, oldest first."""
        with self._lock:
            return list(self._messages)

    def _next_reply(self, stage: Stage) -> str | None:
        with self._lock:
            return self._replies[stage].popleft() if self._replies[stage] else None

    def _record(self, message: Received) -> None:
        with self._lock:
            self._messages.append(message)

    def _authenticate(
        self, server: object, session: object, envelope: object, mechanism: str, data: object
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.credentials == (
            data.login.decode(),
            data.password.decode(),
        )
        return AuthResult(success=ok, handled=False)  # aiosmtpd then answers 235 or 535


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: object, session: object, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.server._next_reply("rcpt")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        reply = self.server._next_reply("data")
        if reply is not None:
            return reply
        content = envelope.original_content or envelope.content
        self.server._record(Received(envelope.mail_from, tuple(envelope.rcpt_tos), content))
        return "250 Message accepted for delivery"


class _FreePortController(Controller):
    """Binds port 0 itself (aiosmtpd's Controller wants a fixed port) and remembers the port."""

    def _create_server(self) -> Any:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((self.hostname, 0))
        self.port = listener.getsockname()[1]
        return self.loop.create_server(self._factory_invoker, sock=listener, ssl=self.ssl_context)


def silent_port() -> tuple[socket.socket, int]:
    """A listening socket that never answers (the SMTP greeting never comes), and its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener, listener.getsockname()[1]
