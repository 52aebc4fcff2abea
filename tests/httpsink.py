"""A real local HTTP server for tests: records every request and answers from a script.

::

    with HttpSink() as sink:                       # listens on 127.0.0.1, a free port
        sink.script(Answer(503, {"Retry-After": "1"}), Answer(200))
        send_http(sink.url("/hook"), b"{}", delivery_id="d1")
        assert sink.requests[0].header("webhook-id") == "d1"

Scripted answers are consumed in order, one per request; then ``respond(request)``
answers, when set, else ``default``. An answer's ``delay`` (seconds) is waited before
answering; closing the sink cuts every wait short, so a test never hangs on a slow answer
it has given up on. With ``tls`` (a server-side SSLContext) the sink speaks HTTPS
(``url()`` says so); each handshake it refuses is kept in ``refused``.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Answer:
    """What the sink sends back: status, headers, body, after ``delay`` seconds.

    ``body`` is bytes, str (UTF-8), or an iterable of byte chunks streamed one by one
    (give its Content-Length in ``headers``; a generator serves one request only).
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str | Iterable[bytes] = b""
    delay: float = 0.0

    def chunks(self) -> Iterable[bytes]:
        if isinstance(self.body, str):
            return [self.body.encode()]
        if isinstance(self.body, bytes):
            return [self.body]
        return self.body

    def length(self) -> int | None:
        """Content-Length to send when the headers do not give one (None: unknown)."""
        if isinstance(self.body, (bytes, str)):
            return sum(len(c) for c in self.chunks())
        return None


@dataclass(frozen=True)
class Recorded:
    """One request as the sink received it; ``headers`` keep order, case and repeats."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    at: float = field(default_factory=time.monotonic)  #: arrival, time.monotonic()

    def json(self) -> object:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


class HttpSink:
    """A ThreadingHTTPServer on 127.0.0.1 that records requests and plays a script."""

    def __init__(self, default: Answer | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.default = default or Answer()
        #: called with each Recorded request before it is answered (e.g. to inject a fault)
        self.on_request: Callable[[Recorded], object] | None = None
        #: answers a request when no scripted answer is left (instead of ``default``)
        self.respond: Callable[[Recorded], Answer] | None = None
        #: the handshakes refused (with TLS): the error each ended with
        self.refused: list[str] = []
        #: connections served so far (a client that keeps its connection alive opens one)
        self.accepted = 0
        self._answers: deque[Answer] = deque()
        self._requests: list[Recorded] = []
        self._statuses: list[int] = []
        self._finished: list[float | None] = []  #: when each answer began (monotonic)
        self._lock = threading.Lock()
        self._received = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._server.tls = tls
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> HttpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/") -> str:
        scheme = "https" if self._server.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def script(self, *answers: Answer) -> None:
        """Queue ``answers`` for the next requests, in order."""
        with self._lock:
            self._answers.extend(answers)

    def fail_first_attempts(self, status: int = 503) -> None:
        """Answer ``status`` to the first request of each delivery (by its ``webhook-id``),
        as the default to the later ones: every delivery goes through a retry."""
        seen: set[str | None] = set()

        def first_fails(request: Recorded) -> None:
            key = request.header("webhook-id")
            if key not in seen:
                seen.add(key)
                self.script(Answer(status))

        self.on_request = first_fails

    @property
    def requests(self) -> list[Recorded]:
        """A copy of every request recorded so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """Block until at least ``count`` requests arrived; AssertionError on timeout."""
        with self._received:
            if not self._received.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(f"expected {count} requests, got {len(self._requests)}")
            return list(self._requests)

    def close(self) -> None:
        """Cut pending delays short, stop serving, join handler threads, close sockets."""
        self._closing.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        with self._lock:
            for connection in self._connections:  # idle keep-alive connections: wake them
                _hang_up(connection)
        self._server.server_close()  # joins handler threads (block_on_close)

    def _record(self, request: Recorded) -> tuple[Answer, int]:
        if self.on_request is not None:
            self.on_request(request)
        with self._received:
            if self._answers:
                answer = self._answers.popleft()
            else:
                answer = self.respond(request) if self.respond is not None else self.default
            self._requests.append(request)
            self._statuses.append(answer.status)
            self._finished.append(None)
            self._received.notify_all()
            return answer, len(self._requests) - 1

    def _finish(self, index: int) -> None:
        with self._lock:
            self._finished[index] = time.monotonic()

    def answered(self) -> list[tuple[Recorded, int]]:
        """Each request with the status it was (or is being) answered with."""
        with self._lock:
            return list(zip(self._requests, self._statuses, strict=True))

    def exchanges(self) -> list[tuple[Recorded, int, float | None]]:
        """Each request with its status and when the sink began to send its answer, after
        any delay (``time.monotonic()``, as ``Recorded.at``: before the client can have it;
        None while it waits)."""
        with self._lock:
            return list(zip(self._requests, self._statuses, self._finished, strict=True))

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_ and self._closing.is_set():
                _hang_up(connection)
            (self._connections.add if open_ else self._connections.discard)(connection)
            self.accepted += open_

    def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` s; False when the sink closed meanwhile."""
        return not self._closing.wait(delay) if delay > 0 else True


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins them: no thread outlives its test
    block_on_close = True
    # socketserver's backlog is 5: 64 senders connecting at once would see resets
    request_queue_size = 256
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, object]:
        """With TLS, the connection wrapped: its handshake is made in its handler's thread."""
        connection, address = super().get_request()
        if self.tls is not None:
            connection = self.tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet when a client hung up (after its timeout, say) or a handshake failed;
        loud for anything else."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            super().handle_error(request, client_address)


def _handshake(sink: HttpSink, connection: ssl.SSLSocket) -> None:
    """The server's side of the handshake; one refused is recorded, its alert left for the
    client to read (the connection drained before it is closed: closed at once, with the
    client's request unread, it would be reset before the client reads the alert)."""
    connection.settimeout(5)
    try:
        connection.do_handshake()
    except (ssl.SSLError, OSError) as exc:
        with sink._lock:
            sink.refused.append(str(exc))
        try:
            connection.shutdown(socket.SHUT_WR)
            while socket.socket.recv(connection, 65536):
                pass
        except OSError:
            pass
        raise
    connection.settimeout(None)


def _hang_up(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


def _handler_for(sink: HttpSink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            if isinstance(self.request, ssl.SSLSocket):
                _handshake(sink, self.request)
            super().setup()
            sink._track(self.connection, True)

        def finish(self) -> None:
            sink._track(self.connection, False)
            super().finish()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            answer, index = sink._record(
                Recorded(self.command, self.path, tuple(self.headers.items()), body)
            )
            if sink._wait(answer.delay):
                sink._finish(index)  # before the client can have the answer
                _answer(self, answer)
            else:
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler


def _answer(handler: BaseHTTPRequestHandler, answer: Answer) -> None:
    handler.send_response(answer.status)
    headers = {k.lower(): (k, v) for k, v in answer.headers.items()}
    if answer.length() is not None:
        headers.setdefault("content-length", ("Content-Length", str(answer.length())))
    if "content-length" not in headers:
        handler.close_connection = True  # the body ends when the connection does
    for name, value in headers.values():
        handler.send_header(name, value)
    handler.end_headers()
    try:
        for chunk in answer.chunks():
            handler.wfile.write(chunk)
    except ConnectionError:  # the client stopped reading: relay caps what it reads
        handler.close_connection = True


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def iter_chunks(total: int, size: int = 65536) -> Iterable[bytes]:
    """``total`` bytes of filler in ``size`` chunks, for huge-body answers."""
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)
