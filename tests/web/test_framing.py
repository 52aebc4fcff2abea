"""Where a request ends, as the web worker's event loop finds it with h11, and the request
gunicorn then reads (relay/web/framing.py)."""

from __future__ import annotations

import json

import pytest

from relay.errors import FramingError, IngestError
from relay.web.framing import RequestFraming, loop_answer
from relay.web.server import BufferedSource
from tests.harness import ROOT

MAX_HEAD = 8192
MAX_BODY = 100


def frame_of(data: bytes, step: int | None = None) -> tuple[bool, RequestFraming]:
    """Feed ``data`` at once (or ``step`` bytes at a time); the last answer and the frame."""
    frame = RequestFraming(MAX_HEAD, MAX_BODY)
    step = step or len(data) or 1
    done = False
    for start in range(0, max(len(data), 1), step):
        done = frame.feed(data[start : start + step])
        if done:
            break
    return done, frame


def refusal(data: bytes, step: int | None = None) -> IngestError:
    with pytest.raises(IngestError) as caught:
        frame_of(data, step)
    return caught.value


START = b"POST /webhooks/webex-connect HTTP/1.1\r\n"
HEAD = START + b"Host: relay\r\n"

# what the client sends → what gunicorn reads
COMPLETE = {
    "get": (
        b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n",
    ),
    "content-length": (
        HEAD + b"Content-Length: 5\r\n\r\nhello",
        HEAD + b"Content-Length: 5\r\n\r\nhello",
    ),
    "content-length 0": (HEAD + b"Content-Length: 0\r\n\r\n", HEAD + b"Content-Length: 0\r\n\r\n"),
    "header case and spaces": (
        HEAD + b"content-LENGTH:  003 \r\nX-A:  b  \r\n\r\nabc",
        HEAD + b"X-A: b\r\nContent-Length: 3\r\n\r\nabc",
    ),
    "the same length twice": (
        HEAD + b"Content-Length: 2\r\nContent-Length: 2, 2\r\n\r\nhi",
        HEAD + b"Content-Length: 2\r\n\r\nhi",
    ),
    "chunked": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
        HEAD + b"Content-Length: 8\r\n\r\nhelloabc",
    ),
    "chunked, in capitals, with trailers": (
        HEAD + b"Transfer-Encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n",
        HEAD + b"Content-Length: 2\r\n\r\nhi",
    ),
    "chunked, empty": (
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        HEAD + b"Content-Length: 0\r\n\r\n",
    ),
    "bare LF lines": (
        START.replace(b"\r\n", b"\n") + b"Host: relay\nContent-Length: 2\n\nhi",
        HEAD + b"Content-Length: 2\r\n\r\nhi",
    ),
    "a folded line": (
        HEAD + b"X-Fold: one\r\n two\r\nContent-Length: 0\r\n\r\n",
        HEAD + b"X-Fold: one two\r\nContent-Length: 0\r\n\r\n",
    ),
    "expect 100-continue (answered in the loop)": (
        HEAD + b"Expect: 100-Continue\r\nContent-Length: 2\r\n\r\nhi",
        HEAD + b"Content-Length: 2\r\n\r\nhi",
    ),
    "empty lines before it": (
        b"\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\n\r\n",
    ),
}

INCOMPLETE = {
    "no blank line": HEAD,
    "request line only": START,
    "empty lines only": b"\r\n\r\n",
    "body short": HEAD + b"Content-Length: 10\r\n\r\nhello",
    "chunk short": HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "no last chunk": HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    "trailers unfinished": HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Sum: 1\r\n",
}

# refused in the loop, with this status
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
REFUSED = {
    "negative chunk size": (CHUNKED + b"-6\r\nhello\r\n", 400),
    "negative chunk size with an extension": (CHUNKED + b"-7;\r\nhello\r\n", 400),
    "hex-prefixed chunk size": (CHUNKED + b"0x2\r\nhi\r\n0\r\n\r\n", 400),
    "chunk size with a sign": (CHUNKED + b"+2\r\nhi\r\n0\r\n\r\n", 400),
    "chunk size after a space": (CHUNKED + b" 2\r\nhi\r\n0\r\n\r\n", 400),
    "chunk size of 21 digits": (CHUNKED + b"1" * 21 + b"\r\n", 400),
    "chunk size not hex": (CHUNKED + b"zz\r\n", 400),
    "chunk longer than its size": (CHUNKED + b"2\r\nhello\r\n0\r\n\r\n", 400),
    "chunk ended by a bare LF": (CHUNKED + b"2\r\nhi\n0\r\n\r\n", 400),
    "length and chunked": (
        HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two lengths": (HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400),
    "length list": (HEAD + b"Content-Length: 1, 2\r\n\r\nx", 400),
    "negative length": (HEAD + b"Content-Length: -1\r\n\r\n", 400),
    "hex length": (HEAD + b"Content-Length: 0x1\r\n\r\nx", 400),
    "gzip, chunked": (HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
    "chunked twice": (HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n", 400),
    "two transfer-encodings": (
        HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "chunked in HTTP/1.0": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    "HTTP/2.0": (b"GET / HTTP/2.0\r\nHost: relay\r\n\r\n", 400),
    "no Host in HTTP/1.1": (START + b"Content-Length: 0\r\n\r\n", 400),
    "NUL in a header": (HEAD + b"X-A: a\x00b\r\n\r\n", 400),
    "a space before the colon": (HEAD + b"X-A : b\r\n\r\n", 400),
    "folding at the start": (START + b" Host: relay\r\n\r\n", 400),
    "length over the limit": (HEAD + b"Content-Length: 101\r\n\r\n", 413),
    "chunks over the limit": (
        CHUNKED + b"".join(b"a\r\n0123456789\r\n" for _ in range(11)),
        413,
    ),
    "head over the limit": (HEAD + b"X-Pad: " + b"p" * MAX_HEAD, 431),
}


@pytest.mark.parametrize("step", [None, 1, 7])
@pytest.mark.parametrize("name", COMPLETE)
def test_a_complete_request_reaches_gunicorn_in_canonical_form(name, step):
    sent, canonical = COMPLETE[name]
    assert frame_of(sent[:-1], step)[0] is False
    done, frame = frame_of(sent, step)
    assert done and frame.canonical() == canonical and frame.rest == b""


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("name", INCOMPLETE)
def test_an_incomplete_request_waits(name, step):
    assert frame_of(INCOMPLETE[name], step)[0] is False


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("name", REFUSED)
def test_a_framing_relay_cannot_trust_is_refused(name, step):
    sent, status = REFUSED[name]
    assert refusal(sent, step).status == status


def test_refusals_say_what_was_wrong():
    assert isinstance(refusal(REFUSED["negative chunk size"][0]), FramingError)
    assert str(refusal(REFUSED["negative chunk size"][0])) == "illegal chunk header: b'-6\\r\\n'"
    assert str(refusal(REFUSED["length and chunked"][0])) == (
        "both Content-Length and Transfer-Encoding"
    )
    assert "100 bytes" in str(refusal(REFUSED["length over the limit"][0]))
    assert len(str(refusal(HEAD + b"X" * 500 + b"\x00: x\r\n\r\n"))) <= 160


@pytest.mark.parametrize("kind", ["content-length", "chunked"])
def test_what_follows_a_request_is_kept_for_the_next_one(kind):
    sent = COMPLETE[kind][0]
    after = b"GET /healthz HTTP/1.1\r\nHo"
    done, frame = frame_of(sent + after)
    assert done and frame.canonical() == COMPLETE[kind][1] and frame.rest == after


def test_expect_100_continue_is_noticed_while_the_body_is_awaited():
    done, frame = frame_of(HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert not done and frame.wants_continue
    frame.feed(b"he")
    assert not frame.wants_continue  # the client did not wait for it
    assert not frame_of(HEAD + b"Content-Length: 5\r\n\r\n")[1].wants_continue
    http10 = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    assert not frame_of(http10)[1].wants_continue


def test_the_loop_answers_a_refusal_in_json_and_closes():
    answer = loop_answer(FramingError("illegal chunk header"))
    head, body = answer.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert b"Connection: close" in lines and b"Content-Type: application/json" in lines
    assert b"Content-Length: %d" % len(body) in lines
    assert json.loads(body) == {"error": "bad_request", "detail": "illegal chunk header"}
    too_large = loop_answer(refusal(REFUSED["length over the limit"][0]))
    assert too_large.startswith(b"HTTP/1.1 413 ")
    assert json.loads(too_large.split(b"\r\n\r\n", 1)[1])["error"] == "payload_too_large"


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
