"""Where one HTTP/1.x request ends, found by h11 as its bytes arrive, and the request as
gunicorn then gets it.

The web worker's event loop (:mod:`relay.web.server`) frames each request before a thread
takes it. Framing is h11's (a sans-I/O HTTP/1.1 parser: bytes in, events out, kept to the
RFC's grammar: a chunk size is 1 to 20 hex digits and nothing else). gunicorn 27 has a
push parser of its own (``gunicorn.asgi.parser.PythonProtocol``), but it is an internal
part of gunicorn's ASGI worker, new in 27 and still gaining methods to match its C twin,
and lenient where a framer should not be (at EOF it takes a chunked body without its last
line); h11 is a library made to be embedded (httpx and uvicorn do), typed, with a small
interface that has held for years.

Two parsers must never disagree on where a request ends, so gunicorn's blocking parser is
never shown the client's framing: it reads only :meth:`RequestFraming.canonical`, the
request rebuilt from what h11 parsed: the request line and header lines with CRLF ends
(folded lines unfolded), no ``Transfer-Encoding`` and no ``Expect: 100-continue`` (the
loop answered it), the body whole behind one ``Content-Length``, trailers dropped.
Whatever h11 refuses, and what relay refuses on top (both ``Content-Length`` and
``Transfer-Encoding``, ``Transfer-Encoding`` in HTTP/1.0, an HTTP version other than 1.0
and 1.1), raises :class:`FramingError`: 400 ``bad_request`` (431 for a head over
gunicorn's limits), answered by the loop (:func:`loop_answer`) before the connection
closes. A body over the limit raises :class:`~relay.errors.TooLargeError` (413): by its
``Content-Length`` before it is read, a chunked one as soon as it passes the limit.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import h11

from relay.errors import FramingError, IngestError, TooLargeError
from relay.web.answers import json_body

#: header lines gunicorn does not get as the client sent them (lower case)
_FRAMING = frozenset((b"content-length", b"transfer-encoding"))
_CONTINUE = b"100-continue"
_VERSIONS = (b"1.1", b"1.0")
#: h11's messages quote the client's bytes as ``bytearray(b'…')``: shown as ``b'…'``
_BYTEARRAY = re.compile(r"bytearray\((b['\"].*['\"])\)")
_DETAIL_CHARS = 160  #: of a parser's message in an answer (it may quote the client's bytes)


class RequestFraming:
    """One request, read as its bytes come. :meth:`feed` answers True once it is whole,
    and raises :class:`FramingError` or :class:`~relay.errors.TooLargeError` as soon as
    it cannot be.

    h11 reads the head, and a chunked body. A ``Content-Length`` body is the next so many
    bytes (h11 has checked the header and decided that), counted here: h11's events for
    it cost more than the rest of the framing, on the path every webhook takes.
    """

    __slots__ = (
        "_parser",
        "_max_body",
        "_headers",
        "_body",
        "_size",
        "_left",
        "_rest",
        "_started",
        "_continue",
        "received",
        "request",
    )

    def __init__(self, max_head: int, max_body: int) -> None:
        self._parser: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=max_head
        )
        self._max_body = max_body
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._left = -1  #: bytes of a Content-Length body still to come (-1: h11 reads)
        self._rest = b""
        self._started = False
        self._continue = False
        self.received = 0  #: bytes fed
        self.request: h11.Request | None = None

    def feed(self, data: bytes) -> bool:
        self.received += len(data)
        if self._left >= 0:
            return self._count(data)
        if not self._started:
            data = data.lstrip(b"\r\n")  # empty lines before a request line are ignored
            if not data:
                return False
            self._started = True
        parser = self._parser
        assert parser is not None
        parser.receive_data(data)
        try:
            while True:
                event = parser.next_event()
                if isinstance(event, h11.Data):
                    self._add(event.data)
                elif event is h11.NEED_DATA:
                    return False
                elif isinstance(event, h11.Request):
                    length = self._check(event)
                    if length >= 0:
                        self._left, self._parser = length, None
                        return self._count(parser.trailing_data[0])
                else:  # EndOfMessage: h11 gives nothing else before it
                    self._rest = parser.trailing_data[0]
                    return True
        except h11.RemoteProtocolError as exc:
            hint = exc.error_status_hint  # 431 for a head over the limit
            raise FramingError(_detail(exc), status=hint if 400 <= hint < 500 else 400) from None

    @property
    def wants_continue(self) -> bool:
        """``Expect: 100-continue`` received (HTTP/1.1), and no byte of the body yet."""
        return self._continue and not self._body

    @property
    def rest(self) -> bytes:
        """What came after the whole request: the start of the next one (pipelining)."""
        return self._rest

    def canonical(self) -> bytes:
        """The whole request as gunicorn reads it (see the module docstring)."""
        request = self.request
        assert request is not None
        lines = [b"%s %s HTTP/%s\r\n" % (request.method, request.target, request.http_version)]
        framed = False
        for name, value in self._headers:
            lower = name.lower()
            if lower in _FRAMING:
                framed = True
            elif lower != b"expect" or value.lower() != _CONTINUE:  # answered in the loop
                lines.append(b"%s: %s\r\n" % (name, value))
        body = b"".join(self._body)
        if framed:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        lines.append(body)
        return b"".join(lines)

    def _check(self, request: h11.Request) -> int:
        """Refuse what h11 lets through and relay does not; the length of a body that is
        not chunked (0 without ``Content-Length``), or -1 for a chunked one."""
        self.request = request
        version = request.http_version
        if version not in _VERSIONS:
            raise FramingError(f"HTTP/{version.decode()} is not supported")
        self._headers = headers = request.headers.raw_items()
        length = -1
        chunked = expect = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)
            elif lower == b"transfer-encoding":
                chunked = True
            elif lower == b"expect":
                expect = expect or _CONTINUE in value.lower()
        self._continue = expect and version == b"1.1"
        if chunked:
            if length >= 0:
                raise FramingError("both Content-Length and Transfer-Encoding")
            if version == b"1.0":
                raise FramingError("Transfer-Encoding in an HTTP/1.0 request")
            return -1
        if length > self._max_body:
            raise _too_large(self._max_body)
        return max(length, 0)

    def _count(self, data: bytes) -> bool:
        left = self._left
        if len(data) < left:
            if data:
                self._body.append(data)
            self._left -= len(data)
            return False
        if left:
            self._body.append(data[:left])
        self._rest = data[left:]
        self._left = 0
        return True

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max_body:
            raise _too_large(self._max_body)
        self._body.append(data)


def _too_large(limit: int) -> TooLargeError:
    return TooLargeError(f"the body is over {limit} bytes (RELAY_MAX_BODY_BYTES)")


def _detail(exc: h11.RemoteProtocolError) -> str:
    text = _BYTEARRAY.sub(r"\1", str(exc)) or "malformed request"
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def loop_answer(exc: IngestError) -> bytes:
    """The whole answer to a request refused in the event loop (its framing, its size, or
    too slow: :class:`RequestTimeoutError`), closing the connection:
    ``{"error": code, "detail": …}`` as relay's other error answers."""
    body = json_body({"error": exc.code, "detail": str(exc)})
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        % (
            exc.status,
            HTTPStatus(exc.status).phrase.encode(),
            len(body),
        )
        + b"Connection: close\r\n\r\n"
        + body
    )
