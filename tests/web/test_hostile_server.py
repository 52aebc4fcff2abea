"""Oversized bodies against the real web process (gunicorn, relay/web/gunicorn_conf.py).

A Content-Length over RELAY_MAX_BODY_BYTES is refused before the body is read, however
slowly it comes; a chunked body (no Content-Length) is refused once it passes the limit.
"""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest
import requests

from tests.harness import web_process

URL = "/webhooks/webex-connect"
LIMIT = 65536


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("gunicorn") / "web.log"
    with web_process(
        redis_server.url, log, WEB_CONCURRENCY="1", WEB_THREADS="4", RELAY_MAX_BODY_BYTES=str(LIMIT)
    ) as port:
        yield port


def head(extra: str) -> bytes:
    return (
        f"POST {URL} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def read_answer(conn: socket.socket, timeout: float = 3.0) -> bytes:
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("length", [LIMIT + 1, 10**12])
def test_a_content_length_over_the_limit_is_413_before_the_body_arrives(server, length):
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(head(f"Content-Length: {length}\r\n") + b'{"oa": ')  # and then nothing
        started = time.monotonic()
        answer = read_answer(conn)
    assert status_of(answer) == 413
    assert time.monotonic() - started < 2.0


def test_a_chunked_body_over_the_limit_is_413(server):
    body = b"".join(chunk(b"x" * 8192) for _ in range(10)) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(head("Transfer-Encoding: chunked\r\n") + body)
        assert status_of(read_answer(conn)) == 413


def test_a_slow_endless_chunked_body_is_refused_once_past_the_limit(server):
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(head("Transfer-Encoding: chunked\r\n"))
        sent = 0
        answer = b""
        conn.setblocking(False)
        for _ in range(60):  # up to 540 KB, 20 ms apart: never finished
            try:
                conn.sendall(chunk(b"y" * 9000))
                sent += 9000
            except (BlockingIOError, OSError):
                pass
            time.sleep(0.02)
            try:
                answer = conn.recv(4096)
            except BlockingIOError:
                continue
            break
    assert answer and status_of(answer) == 413
    assert sent < 3 * LIMIT, f"answered only after {sent} bytes"


def test_a_chunked_body_within_the_limit_is_accepted(server):
    payload = json.dumps({"oa": "447700900123", "da": "12345", "message": "chunked"}).encode()
    body = chunk(payload[:10]) + chunk(payload[10:]) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(head("Transfer-Encoding: chunked\r\n") + body)
        assert status_of(read_answer(conn)) == 200


def test_the_server_still_answers_after_all_that(server):
    """After hostile clients of its own (the tests above may run after it, or alone):
    bodies over the limit, declared and chunked, and a client that vanishes mid-body."""
    test_a_content_length_over_the_limit_is_413_before_the_body_arrives(server, 10**12)
    test_a_chunked_body_over_the_limit_is_413(server)
    test_a_slow_endless_chunked_body_is_refused_once_past_the_limit(server)
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(head("Transfer-Encoding: chunked\r\n") + chunk(b"z" * 100))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    assert requests.get(f"http://127.0.0.1:{server}/healthz", timeout=2).json() == {"status": "ok"}


# -- requests are read whole before a thread takes them (relay/web/server.py) --------------


def read_answers(conn: socket.socket, count: int, timeout: float = 3.0) -> list[bytes]:
    """``count`` whole answers (each with its Content-Length body) from ``conn``."""
    conn.settimeout(timeout)
    data, answers = b"", []
    while len(answers) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].decode("latin-1").lower()
            length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
            if len(data) >= end + 4 + length:
                answers.append(data[: end + 4 + length])
                data = data[end + 4 + length :]
                continue
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return answers


def test_pipelined_requests_are_each_answered_in_order(server):
    payload = json.dumps({"oa": "447700900123", "da": "12345", "message": "pipelined"})
    post = head(f"Content-Length: {len(payload)}\r\n") + payload.encode()
    health = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(health + post + health)
        answers = read_answers(conn, 3)
    assert [status_of(answer) for answer in answers] == [200, 200, 200]
    assert b'"accepted"' in answers[1] and b'"status"' in answers[2]


def test_a_kept_alive_connection_serves_one_request_after_another(server):
    with requests.Session() as session:
        for _ in range(3):
            answer = session.get(f"http://127.0.0.1:{server}/healthz", timeout=2)
            assert answer.json() == {"status": "ok"}


def test_expect_100_continue_gets_its_interim_answer_before_the_body(server):
    payload = json.dumps({"oa": "447700900123", "da": "12345", "message": "continue"}).encode()
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(head(f"Content-Length: {len(payload)}\r\nExpect: 100-continue\r\n"))
        conn.settimeout(2)
        assert conn.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(payload)
        answer = read_answer(conn)
        while answer.startswith(b"HTTP/1.1 100 "):  # another interim answer may come: allowed
            answer = answer.split(b"\r\n\r\n", 1)[1] or read_answer(conn)
    assert status_of(answer) == 200
