"""Slow clients against the real web process (gunicorn, relay/web/gunicorn_conf.py).

A client that sends its request slowly holds no thread: 50 of them, sending one header
line every 2 s to a web process with 2 threads, leave /healthz and a normal POST answering
within 2 s. A request not complete within RELAY_READ_TIMEOUT is answered 408 and closed,
however its bytes trickle in.
"""

from __future__ import annotations

import select
import socket
import time

import pytest
import requests

from tests.conftest import load_fixture
from tests.harness import web_process

pytestmark = pytest.mark.e2e

READ_TIMEOUT = 4.0
URL = "/webhooks/webex-connect"


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("gunicorn") / "web.log"
    env = {"WEB_CONCURRENCY": "1", "WEB_THREADS": "2", "RELAY_READ_TIMEOUT": f"{READ_TIMEOUT:g}s"}
    with web_process(redis_server.url, log, **env) as port:
        yield port


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def timed(call) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_fifty_slow_clients_do_not_stall_the_web_tier(server):
    base = f"http://127.0.0.1:{server}"
    clients = []
    try:
        for _ in range(50):
            conn = connect(server)
            conn.sendall(f"POST {URL} HTTP/1.1\r\nHost: relay\r\n".encode())
            clients.append(conn)
        for line in range(2):  # one header line every 2 s, as the audit's clients did
            started = time.monotonic()
            health, elapsed = timed(lambda: requests.get(base + "/healthz", timeout=2))
            assert health.status_code == 200 and elapsed < 2.0
            post, elapsed = timed(
                lambda: requests.post(
                    base + URL, json=load_fixture("receipt-delivered.json"), timeout=2
                )
            )
            assert post.status_code == 200 and elapsed < 2.0, post.text
            time.sleep(max(0.0, started + 2.0 - time.monotonic()))
            for conn in clients:
                conn.sendall(f"X-Slow-{line}: still typing\r\n".encode())
    finally:
        for conn in clients:
            conn.close()


def test_requests_not_complete_within_the_read_timeout_are_408_and_closed(server):
    """Four ways of being slow at once, each bounded by the deadline; nothing waits longer."""
    head = f"POST {URL} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
    trickles = {
        # name: (first bytes, then one of these every 0.5 s)
        "header lines": (head.encode(), b"X-Slow: 1\r\n"),
        "body bytes": ((head + "Content-Length: 500\r\n\r\n").encode(), b" "),
        "head then silence": (head.encode(), b""),
        "chunked body": ((head + "Transfer-Encoding: chunked\r\n\r\n").encode(), b"1\r\n \r\n"),
    }
    conns = {name: connect(server) for name in trickles}
    silent = connect(server)  # opened, never used
    started = time.monotonic()
    answers: dict[str, bytes] = {}
    ended: dict[str, float] = {}
    try:
        for name, (first, _) in trickles.items():
            conns[name].sendall(first)
        watched = {**conns, "never used": silent}
        while len(ended) < len(watched) and time.monotonic() - started < READ_TIMEOUT + 4:
            for name, (_, more) in trickles.items():
                if name not in ended and more:
                    try:
                        conns[name].sendall(more)
                    except OSError:
                        pass
            readable, _, _ = select.select(
                [conn for name, conn in watched.items() if name not in ended], [], [], 0.5
            )
            for conn in readable:
                name = next(key for key, value in watched.items() if value is conn)
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                answers[name] = answers.get(name, b"") + data
                if not data:
                    ended[name] = time.monotonic() - started
    finally:
        for conn in [*conns.values(), silent]:
            conn.close()
    assert set(ended) == {*trickles, "never used"}, f"still open: {set(trickles) - set(ended)}"
    for name, elapsed in ended.items():
        assert READ_TIMEOUT - 0.5 <= elapsed <= READ_TIMEOUT + 2.5, (name, elapsed)
    for name in trickles:
        assert answers[name].startswith(b"HTTP/1.1 408 "), (name, answers[name][:80])
    assert answers.get("never used", b"") == b""


def test_the_server_still_answers_after_all_that(server):
    """After slow clients of its own (the tests above may run after it, or alone): ten
    that stop half-way through their headers, held until the read timeout closes them."""
    clients = [connect(server) for _ in range(10)]
    try:
        for conn in clients:
            conn.sendall(f"POST {URL} HTTP/1.1\r\nHost: relay\r\n".encode())
        for conn in clients:
            conn.settimeout(READ_TIMEOUT + 5)
            while conn.recv(65536):  # a 408, then the end: the server closed it
                pass
    finally:
        for conn in clients:
            conn.close()
    assert requests.get(f"http://127.0.0.1:{server}/healthz", timeout=2).json() == {"status": "ok"}
