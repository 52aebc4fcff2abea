"""gunicorn's threaded worker, with every request read whole before a thread takes it.

gthread hands a connection to a thread once its first byte arrives, and the thread then
blocks reading the rest: a client sending one header line every 2 s holds a thread for as
long as it likes, and as many such clients as there are threads stall the web tier,
``/healthz`` included. :class:`BoundedReadWorker` (``worker_class`` in
``relay/web/gunicorn_conf.py``) reads each request in the worker's event loop instead,
without blocking, framed by h11 (:mod:`relay.web.framing`): the head, then the body (by
``Content-Length`` or chunk by chunk, up to ``RELAY_MAX_BODY_BYTES``). Only a complete
request goes to a thread, whose parser reads the request rebuilt in canonical form from
what h11 parsed, and never the client. A request not complete within
``RELAY_READ_TIMEOUT`` of its connection (or of the previous answer, on a kept-alive one)
is answered ``408`` and the connection closed. Slow clients cost a socket and a buffer,
never a thread; answers are written with the same timeout.

A request whose framing is refused (malformed, ambiguous, or a body over the limit) is
answered by the loop, 400 or 413 in JSON like the 408, and its connection closed after a
linger: no thread, no traceback, one log line. What gunicorn's own checks refuse in a whole
request (its line and header limits, a repeated ``Content-Type``, an unknown ``Expect``)
it answers itself, 4xx. With TLS, the PROXY protocol, uwsgi or HTTP/2 configured in
gunicorn, the worker is plain gthread.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from concurrent.futures import Future
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from relay.errors import IngestError, RequestTimeoutError
from relay.settings import load_settings
from relay.web.framing import RequestFraming, loop_answer

log = logging.getLogger("relay.web")

RECV_SIZE = 65536
LINGER_SECONDS = 2.0  #: how long a closing connection is drained (as gunicorn does)
LINGER_BYTES = 65536
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BufferedSource:
    """What a connection's request parser reads: bytes the event loop received. It never
    reads the socket, so a thread never waits on a client; past the end it gives EOF."""

    def __init__(self) -> None:
        self.data = bytearray()

    def recv(self, size: int) -> bytes:
        chunk = bytes(self.data[:size])
        del self.data[:size]
        return chunk

    def take(self) -> bytes:
        rest = bytes(self.data)
        self.data.clear()
        return rest


class BoundedConn(TConn):
    """A gthread connection whose parser reads a :class:`BufferedSource`."""

    initialized: bool
    parser: Any

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.source = BufferedSource()
        self.frame: RequestFraming | None = None
        self.ahead = b""  #: bytes after the request in a thread: the next one's start
        self.deadline = 0.0
        self.continued = False
        self.drained = 0
        self.data_ready = True  # a thread gets the connection only with a whole request

    def init(self) -> None:
        if not self.initialized:
            self.initialized = True
            self.parser = http.get_parser(self.cfg, self.source, self.client)


class BoundedReadWorker(ThreadWorker):
    """gthread whose threads only ever get whole requests (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.bounded = not (
            cfg.is_ssl
            or cfg.protocol != "http"
            or cfg.proxy_protocol not in (None, "off", False)
            or cfg.http2_cleartext not in (None, "off")
        )
        self.reading: dict[BoundedConn, None] = {}  #: in deadline order
        self.lingering: dict[BoundedConn, None] = {}  #: in deadline order
        self.read_timeout = 10.0
        self.max_body = 0
        line = cfg.limit_request_line if 0 < cfg.limit_request_line <= 8190 else 8190
        fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= 32768 else 32768
        size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else 8190
        self.max_head = line + 2 + fields * (size + 2) + 4

    def init_process(self) -> None:
        settings = load_settings()
        self.read_timeout = settings.read_timeout
        self.max_body = settings.max_body_bytes
        if not self.bounded:
            self.log.warning(
                "RELAY_READ_TIMEOUT is not applied with TLS, PROXY protocol, uwsgi or HTTP/2 "
                "configured in gunicorn: terminate those in front of relay"
            )
        super().init_process()

    # -- reading requests in the event loop ---------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        if not self.bounded:
            super().accept(listener)
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BoundedConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._start_reading(conn, b"")

    def on_client_socket_readable(self, conn: BoundedConn, client: socket.socket) -> None:
        """A kept-alive connection has the start of its next request."""
        if not self.bounded:
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        data = _recv(conn)
        if data == b"":  # the client went away
            self._close(conn)
            return
        # read at once: a whole request goes to a thread without being registered again
        self._start_reading(conn, data or b"")

    def _start_reading(self, conn: BoundedConn, data: bytes) -> None:
        conn.frame = RequestFraming(self.max_head, self.max_body)
        conn.deadline = time.monotonic() + self.read_timeout
        conn.continued = False
        if data and self._feed(conn, data):
            return
        self.reading[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if data:
            self._continue(conn)

    def _on_readable(self, conn: BoundedConn, client: socket.socket) -> None:
        data = _recv(conn)
        if data is None:
            return
        if not data:  # the client went away
            self._stop_reading(conn)
            self._close(conn)
            return
        if not self._feed(conn, data):
            self._continue(conn)

    def _continue(self, conn: BoundedConn) -> None:
        """``100 Continue``, once, to a client that waits for it before sending the body."""
        frame = conn.frame
        if frame is not None and frame.wants_continue and not conn.continued:
            conn.continued = True
            try:
                conn.sock.send(CONTINUE)
            except OSError:
                pass

    def _feed(self, conn: BoundedConn, data: bytes) -> bool:
        """Whether ``data`` ended the reading: the request is whole (and went to a
        thread) or refused (and answered)."""
        frame = conn.frame
        assert frame is not None
        try:
            if not frame.feed(data):
                return False
        except IngestError as exc:
            conn.frame = None
            self._stop_reading(conn)
            self._refuse(conn, exc)
            return True
        self._stop_reading(conn)
        conn.source.data += frame.canonical()
        conn.ahead = frame.rest
        conn.frame = None
        self.enqueue_req(conn)
        return True

    def _refuse(self, conn: BoundedConn, exc: IngestError) -> None:
        """Answer a request the loop refused (its framing, a body over the limit, too
        slow), then close: what follows it on the connection cannot be told apart from its
        body."""
        log.info("answered %d to %s: %s", exc.status, _peer(conn.client), exc)
        try:
            conn.sock.send(loop_answer(exc))
        except OSError:
            pass
        self._linger(conn)

    def _stop_reading(self, conn: BoundedConn) -> None:
        self.reading.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    # -- in a thread ----------------------------------------------------------------------

    def handle_request(self, req: Any, conn: BoundedConn) -> Any:
        if self.bounded:  # the answer too: a client that does not read it lets go of the thread
            conn.sock.settimeout(self.read_timeout)
        return super().handle_request(req, conn)

    # -- after the answer -----------------------------------------------------------------

    def finish_request(self, conn: BoundedConn, fs: Future[Any]) -> None:
        if not self.bounded:
            super().finish_request(conn, fs)
            return
        try:
            keep = not fs.cancelled() and fs.exception() is None and fs.result() is True
            if not keep:
                self._linger(conn)
                return
            conn.sock.setblocking(False)
            conn.parser.unreader.take_buffered()  # nothing: the parser got one whole request
            conn.source.take()
            read_ahead, conn.ahead = conn.ahead, b""
            if read_ahead:  # the client sent its next request already
                self._start_reading(conn, read_ahead)
                return
            conn.set_timeout()
            if not self.alive:
                conn.timeout = min(conn.timeout, time.monotonic() + STOP_KEEPALIVE_LINGER)
            self.keepalived_conns.append(conn)
            self.poller.register(
                conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
            )
        except Exception:  # as gthread: a connection in doubt is closed
            self._close(conn)

    def _linger(self, conn: BoundedConn) -> None:
        """Close after the answer without blocking the loop: send FIN, then read what the
        client still sends for a moment, so that it gets the answer rather than a reset."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.deadline = time.monotonic() + LINGER_SECONDS
        conn.drained = 0
        self.lingering[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_lingering, conn))

    def _on_lingering(self, conn: BoundedConn, client: socket.socket) -> None:
        data = _recv(conn)
        if data is None:
            return
        conn.drained += len(data)
        if not data or conn.drained >= LINGER_BYTES:
            self._end_linger(conn)

    def _end_linger(self, conn: BoundedConn) -> None:
        self.lingering.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self._close(conn)

    def _close(self, conn: BoundedConn) -> None:
        self.nr_conns -= 1
        conn.close()

    # -- deadlines (the loop calls these about once a second) ------------------------------

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.reading:
            conn = next(iter(self.reading))
            if conn.deadline > now:
                break
            self._stop_reading(conn)
            self._time_out(conn)
        while self.lingering:
            conn = next(iter(self.lingering))
            if conn.deadline > now:
                break
            self._end_linger(conn)

    def _time_out(self, conn: BoundedConn) -> None:
        """408 to a client that began a request and did not finish it in time."""
        if conn.frame is None or not conn.frame.received:
            self._close(conn)  # opened and never used: closed, as gunicorn does
            return
        detail = f"request not complete within {self.read_timeout:g}s (RELAY_READ_TIMEOUT)"
        self._refuse(conn, RequestTimeoutError(detail))

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        if force:
            for conn in list(self.reading):
                self._stop_reading(conn)
                self._close(conn)
            for conn in list(self.lingering):
                self._end_linger(conn)


def _peer(client: Any) -> str:
    return str(client[0]) if isinstance(client, (tuple, list)) and client else str(client)


def _recv(conn: BoundedConn) -> bytes | None:
    """What the client sent (``b""``: it closed, or the socket failed), or None when
    nothing is there yet."""
    try:
        received: bytes = conn.sock.recv(RECV_SIZE)
        return received
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
