"""Bad framing against the real web process (gunicorn, relay/web/gunicorn_conf.py): the
event loop answers it 400 in JSON at once, closes, logs one line, and goes on answering.

Before h11 framed requests, a chunk size of ``-6`` moved the hand-written parser backwards
and froze the process until gunicorn killed it, and ``0x2`` reached gunicorn, which
answered 500 with a traceback in the log.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.harness import wait_until, web_process

URL = "/webhooks/webex-connect"
CHUNKED = f"POST {URL} HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n".encode()


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("gunicorn") / "web.log"
    with web_process(redis_server.url, log, WEB_CONCURRENCY="1", WEB_THREADS="2") as port:
        yield port, log


def exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    """Everything the server sends back to ``data`` until it closes (within ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def refused(answer: bytes) -> dict:
    """The JSON of a 400 the loop wrote, checking its head on the way."""
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"\r\nContent-Type: application/json" in head and b"\r\nConnection: close" in head
    return json.loads(body)


def healthy(port: int) -> bool:
    started = time.monotonic()
    answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    return answer.json() == {"status": "ok"} and time.monotonic() - started < 2.0


@pytest.mark.parametrize("size", [b"-6", b"-7;"])
def test_a_negative_chunk_size_is_400_at_once_and_the_process_answers_after(server, size):
    port, _ = server
    started = time.monotonic()
    answer = exchange(port, CHUNKED + size + b"\r\nhello\r\n0\r\n\r\n")
    assert time.monotonic() - started < 2.0
    body = refused(answer)
    assert body["error"] == "bad_request" and "chunk" in body["detail"]
    assert healthy(port)


def test_a_hex_prefixed_chunk_size_is_400_with_one_log_line_and_no_traceback(server):
    port, log = server
    body = refused(exchange(port, CHUNKED + b"0x2\r\nhi\r\n0\r\n\r\n"))
    assert body == {"error": "bad_request", "detail": "illegal chunk header: b'0x2\\r\\n'"}
    line = "answered 400 to 127.0.0.1: illegal chunk header: b'0x2\\r\\n'"
    wait_until(lambda: line in log.read_text(), 5)
    text = log.read_text()
    assert "Traceback" not in text and "Error handling request" not in text
    assert healthy(port)


def test_length_and_chunked_together_is_one_400_and_what_hides_in_the_body_is_not_served(
    server,
):
    port, _ = server
    hidden = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"
    body = b"0\r\n\r\n" + hidden
    head = f"POST {URL} HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(body)}\r\n"
    answer = exchange(port, head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert answer.count(b"HTTP/1.1 ") == 1
    assert refused(answer) == {
        "error": "bad_request",
        "detail": "both Content-Length and Transfer-Encoding",
    }


def test_expect_100_continue_on_a_kept_alive_connection_gets_its_interim_answer(server):
    """A kept-alive connection's next request is read as soon as it is readable: one that
    waits for ``100 Continue`` gets it there too."""
    port, _ = server
    payload = json.dumps({"oa": "447700900123", "da": "12345", "message": "continue"}).encode()
    head = f"POST {URL} HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(payload)}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}\n'):
            first += conn.recv(65536)
        conn.sendall(head.encode() + b"Expect: 100-continue\r\n\r\n")
        assert conn.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(payload)
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
