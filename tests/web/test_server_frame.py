"""Where a request ends, as the web worker's event loop finds it (relay/web/server.py)."""

from __future__ import annotations

import pytest

from relay.web.server import BufferedSource, RequestFrame
from tests.harness import ROOT

MAX_HEAD = 8192
MAX_BODY = 100


def frame_of(data: bytes, step: int | None = None) -> tuple[bool, RequestFrame]:
    """Feed ``data`` at once (or ``step`` bytes at a time); the last answer and the frame."""
    frame = RequestFrame(MAX_HEAD, MAX_BODY)
    step = step or len(data) or 1
    done = False
    for start in range(0, max(len(data), 1), step):
        done = frame.feed(data[start : start + step])
        if done:
            break
    return done, frame


HEAD = b"POST /webhooks/webex-connect HTTP/1.1\r\nHost: relay\r\n"

COMPLETE = {
    "get": b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n",
    "content-length": HEAD + b"Content-Length: 5\r\n\r\nhello",
    "content-length 0": HEAD + b"Content-Length: 0\r\n\r\n",
    "header case": HEAD + b"content-LENGTH:  3 \r\n\r\nabc",
    "chunked": HEAD
    + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
    "chunked with trailers": HEAD
    + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n",
    "gzip, chunked": HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
}

INCOMPLETE = {
    "no blank line": HEAD,
    "request line only": b"POST / HTTP/1.1\r\n",
    "body short": HEAD + b"Content-Length: 10\r\n\r\nhello",
    "chunk short": HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "no last chunk": HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    "trailers unfinished": HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Sum: 1\r\n",
}

# handed to gunicorn as they are: it answers (400, 413), then the connection closes
PARTIAL = {
    "length over the limit": HEAD + b"Content-Length: 101\r\n\r\n",
    "two lengths": HEAD + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "bad length": HEAD + b"Content-Length: -1\r\n\r\n",
    "length and chunked": HEAD
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "gzip only": HEAD + b"Transfer-Encoding: gzip\r\n\r\n",
    "chunked twice": HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n",
    "chunked HTTP/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "bad chunk size": HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunks over the limit": HEAD
    + b"Transfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"a\r\n0123456789\r\n" for _ in range(11)),
    "head over the limit": HEAD + b"X-Pad: " + b"p" * MAX_HEAD,
}


@pytest.mark.parametrize("step", [None, 1, 7])
@pytest.mark.parametrize("name", COMPLETE)
def test_a_complete_request_is_found_however_its_bytes_arrive(name, step):
    data = COMPLETE[name]
    assert frame_of(data[:-1], step)[0] is False
    done, frame = frame_of(data, step)
    assert done and not frame.partial


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("name", INCOMPLETE)
def test_an_incomplete_request_waits(name, step):
    assert frame_of(INCOMPLETE[name], step)[0] is False


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("name", PARTIAL)
def test_what_the_framing_cannot_follow_goes_on_as_it_is(name, step):
    done, frame = frame_of(PARTIAL[name], step)
    assert done and frame.partial


def test_expect_100_continue_is_noticed_while_the_body_is_awaited():
    done, frame = frame_of(HEAD + b"Content-Length: 5\r\nExpect: 100-Continue\r\n\r\n")
    assert not done and frame.wants_continue
    assert not frame_of(HEAD + b"Content-Length: 5\r\n\r\n")[1].wants_continue


def test_the_parser_gets_eof_past_the_bytes_received_never_the_socket():
    source = BufferedSource()
    source.data += b"abcdef"
    assert [source.recv(4), source.recv(4), source.recv(4)] == [b"abcd", b"ef", b""]
    source.data += b"next"
    assert source.take() == b"next" and source.take() == b""


def test_the_web_process_uses_the_bounded_worker():
    # read, not imported: importing the configuration sets up this process's metrics
    conf = (ROOT / "relay" / "web" / "gunicorn_conf.py").read_text()
    assert '\nworker_class = "relay.web.server.BoundedReadWorker"\n' in conf
