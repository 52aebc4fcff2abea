"""gunicorn's threaded worker, with every request read whole before a thread takes it.

gthread hands a connection to a thread once its first byte arrives, and the thread then
blocks reading the rest: a client sending one header line every 2 s holds a thread for as
long as it likes, and as many such clients as there are threads stall the web tier,
``/healthz`` included. :class:`BoundedReadWorker` (``worker_class`` in
``relay/web/gunicorn_conf.py``) reads each request in the worker's event loop instead,
without blocking: the head, then the body (by ``Content-Length`` or chunk by chunk, up to
``RELAY_MAX_BODY_BYTES``). Only a complete request goes to a thread, whose parser reads
from those bytes and never from the client. A request not complete within
``RELAY_READ_TIMEOUT`` of its connection (or of the previous answer, on a kept-alive one)
is answered ``408`` and the connection closed. Slow clients cost a socket and a buffer,
never a thread; answers are written with the same timeout.

Requests the framing here cannot follow (a head past gunicorn's limits, a ``Content-Length``
over the body limit, an unusual ``Transfer-Encoding``) go to a thread as they are, for
gunicorn and the app to refuse; their connection closes after the answer. With TLS, the
PROXY protocol, uwsgi or HTTP/2 configured in gunicorn, the worker is plain gthread.
"""

from __future__ import annotations

import errno
import logging
import re
import selectors
import socket
import time
from concurrent.futures import Future
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from relay.settings import load_settings

log = logging.getLogger("relay.web")

RECV_SIZE = 65536
LINGER_SECONDS = 2.0  #: how long a closing connection is drained (as gunicorn does)
LINGER_BYTES = 65536
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TIMEOUT_BODY = b'{"error": "request_timeout"}'
TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(TIMEOUT_BODY), TIMEOUT_BODY)
)
MAX_CHUNK_LINE = 8190  #: bytes of a chunk-size line (gunicorn's limit)
MAX_TRAILERS = 8190 * 32  #: bytes of a trailer section (gunicorn's limit)
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class RequestFrame:
    """Where one HTTP/1.x request ends, found as its bytes arrive (each byte looked at once).

    :meth:`feed` answers True once the request is complete, or once the bytes can go to
    gunicorn as they are (``partial``: it answers, then the connection closes).
    """

    def __init__(self, max_head: int, max_body: int) -> None:
        self.buf = bytearray()
        self.max_head = max_head
        self.max_body = max_body
        self.partial = False
        self.wants_continue = False  #: ``Expect: 100-continue`` and the body still to come
        self._head_end = -1
        self._searched = 0
        self._chunked = False
        self._length = 0
        self._pos = 0  #: chunked: where parsing goes on
        self._phase = "size"  #: chunked: size, data, crlf, trailers
        self._left = 0  #: chunked: bytes of the current chunk still to come
        self._decoded = 0  #: chunked: body bytes so far

    def feed(self, data: bytes) -> bool:
        self.buf += data
        if self._head_end < 0 and not self._read_head():
            return False
        if self.partial:
            return True
        if self._chunked:
            return self._read_chunks()
        return len(self.buf) - self._head_end >= self._length

    def _read_head(self) -> bool:
        found = _HEAD_END.search(self.buf, self._searched)
        if found is None:
            self._searched = max(0, len(self.buf) - 3)
            if len(self.buf) > self.max_head:
                self.partial = True  # gunicorn refuses it
                return True
            return False
        self._head_end = self._pos = found.end()
        lines = bytes(self.buf[: found.start()]).split(b"\n")
        version = lines[0].rstrip(b"\r").rsplit(b" ", 1)[-1].upper()
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.rstrip(b"\r").partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        self._frame(version, headers)
        return True

    def _frame(self, version: bytes, headers: dict[bytes, list[bytes]]) -> None:
        lengths = headers.get(b"content-length", [])
        codings = [
            coding.strip().lower()
            for value in headers.get(b"transfer-encoding", [])
            for coding in value.split(b",")
        ]
        if codings:
            chunked_last = codings[-1] == b"chunked" and codings.count(b"chunked") == 1
            self._chunked = chunked_last and not lengths and version == b"HTTP/1.1"
            self.partial = not self._chunked
        elif lengths:
            if len(lengths) != 1 or not lengths[0].isdigit():
                self.partial = True
            else:
                self._length = int(lengths[0])
                self.partial = self._length > self.max_body  # answered 413 unread
        expect = [value.lower() for value in headers.get(b"expect", [])]
        self.wants_continue = b"100-continue" in expect and version == b"HTTP/1.1"

    def _read_chunks(self) -> bool:
        buf = self.buf
        while True:
            if self._phase == "size":
                end = buf.find(b"\r\n", self._pos)
                if end < 0:
                    self.partial = len(buf) - self._pos > MAX_CHUNK_LINE
                    return self.partial
                size = bytes(buf[self._pos : end]).split(b";", 1)[0].strip()
                try:
                    self._left = int(size, 16)
                except ValueError:
                    self.partial = True
                    return True
                self._pos = end + 2
                self._phase = "data" if self._left else "trailers"
            elif self._phase == "data":
                taken = min(self._left, len(buf) - self._pos)
                self._pos += taken
                self._left -= taken
                self._decoded += taken
                if self._decoded > self.max_body:  # enough for the app to answer 413
                    self.partial = True
                    return True
                if self._left:
                    return False
                self._phase = "crlf"
            elif self._phase == "crlf":
                if len(buf) - self._pos < 2:
                    return False
                self._pos += 2
                self._phase = "size"
            else:  # trailers: an empty line, or header lines and then one
                if len(buf) - self._pos < 2:
                    return False
                if buf[self._pos : self._pos + 2] == b"\r\n":
                    return True
                if buf.find(b"\r\n\r\n", self._pos) >= 0:
                    return True
                self.partial = len(buf) - self._pos > MAX_TRAILERS
                return self.partial


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
        self.frame: RequestFrame | None = None
        self.deadline = 0.0
        self.partial = False
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
        self._start_reading(conn, b"")
        if conn in self.reading:
            self._on_readable(conn, client)

    def _start_reading(self, conn: BoundedConn, data: bytes) -> None:
        conn.frame = RequestFrame(self.max_head, self.max_body)
        conn.deadline = time.monotonic() + self.read_timeout
        conn.continued = False
        if data and conn.frame.feed(data):
            self._dispatch(conn)
            return
        self.reading[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: BoundedConn, client: socket.socket) -> None:
        data = _recv(conn)
        if data is None:
            return
        if not data:  # the client went away
            self._stop_reading(conn)
            self._close(conn)
            return
        frame = conn.frame
        assert frame is not None
        if frame.feed(data):
            self._stop_reading(conn)
            self._dispatch(conn)
        elif frame.wants_continue and not conn.continued:
            conn.continued = True  # gunicorn sends another once the app reads: allowed
            try:
                conn.sock.send(CONTINUE)
            except OSError:
                pass

    def _stop_reading(self, conn: BoundedConn) -> None:
        self.reading.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _dispatch(self, conn: BoundedConn) -> None:
        frame = conn.frame
        assert frame is not None
        conn.source.data += frame.buf
        conn.partial = frame.partial
        conn.frame = None
        self.enqueue_req(conn)

    # -- in a thread ----------------------------------------------------------------------

    def handle_request(self, req: Any, conn: BoundedConn) -> Any:
        if self.bounded:  # the answer too: a client that does not read it lets go of the thread
            conn.sock.settimeout(self.read_timeout)
        return super().handle_request(req, conn)

    def _keepalive_after(self, conn: BoundedConn, keepalive: bool) -> bool:
        if self.bounded and conn.partial:  # the rest of its body was never read
            return False
        return bool(super()._keepalive_after(conn, keepalive))

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
            read_ahead = conn.parser.unreader.take_buffered() + conn.source.take()
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
        except Exception:  # noqa: BLE001 - as gthread: a connection in doubt is closed
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
        if conn.frame is None or not conn.frame.buf:
            self._close(conn)  # opened and never used: closed, as gunicorn does
            return
        log.info(
            "answered 408 to %s: request not complete within %gs (RELAY_READ_TIMEOUT)",
            _peer(conn.client),
            self.read_timeout,
        )
        try:
            conn.sock.send(TIMEOUT_ANSWER)
        except OSError:
            pass
        self._linger(conn)

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
        return conn.sock.recv(RECV_SIZE)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
