"""send_http against a real local HTTP server (tests/httpsink.py): no mocks of requests."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

import relay.actions.sessions
from relay import __version__
from relay.actions import close_session, content_type_for, get_session, send_http
from tests.httpsink import Answer, HttpSink, closed_port, iter_chunks

TIMEOUT = 0.5  # seconds: every test here finishes in well under that when all is well


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with HttpSink() as running:
        yield running
    close_session()  # drop pooled connections to this sink with it


def send(sink: HttpSink, body: bytes = b'{"a": 1}', **kwargs: object):
    kwargs.setdefault("delivery_id", "dlv-1")
    kwargs.setdefault("timeout", TIMEOUT)
    return send_http(sink.url("/hook"), body, **kwargs)  # type: ignore[arg-type]


def test_a_2xx_answer_is_ok_and_the_body_arrives_as_sent(sink: HttpSink) -> None:
    sink.script(Answer(202))
    outcome = send(sink, b'{"a": 1}')
    assert (outcome.kind, outcome.status, outcome.error) == ("ok", 202, None)
    assert 0 < outcome.latency < TIMEOUT
    (request,) = sink.requests
    assert (request.method, request.path, request.body) == ("POST", "/hook", b'{"a": 1}')
    assert request.header("Content-Type") == "application/json"


def test_every_request_carries_webhook_id_and_user_agent(sink: HttpSink) -> None:
    send(sink, delivery_id="evt-9:crm")
    (request,) = sink.requests
    assert request.header("webhook-id") == "evt-9:crm"
    assert request.header("User-Agent") == f"relay/{__version__} (+webex-connect-relay)"


def test_the_same_delivery_id_is_sent_on_every_retry(sink: HttpSink) -> None:
    sink.script(Answer(503), Answer(200))
    assert [send(sink).kind, send(sink).kind] == ["transient", "ok"]
    assert [r.header("webhook-id") for r in sink.requests] == ["dlv-1", "dlv-1"]


def test_destination_headers_are_sent_but_cannot_replace_webhook_id(sink: HttpSink) -> None:
    headers = {"Authorization": "Bearer t0k", "Content-Type": "text/csv", "webhook-id": "x"}
    send(sink, headers=headers)
    (request,) = sink.requests
    assert request.header("Authorization") == "Bearer t0k"
    assert request.header("Content-Type") == "text/csv"
    assert request.header("webhook-id") == "dlv-1"


def test_the_signer_hook_adds_its_headers(sink: HttpSink) -> None:
    seen = []

    def signer(delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        seen.append((delivery_id, timestamp, body))
        return {"webhook-timestamp": str(timestamp), "webhook-signature": "v1,c2ln"}

    send(sink, b"{}", signer=signer)
    (request,) = sink.requests
    ((delivery_id, timestamp, body),) = seen
    assert (delivery_id, body) == ("dlv-1", b"{}")
    assert request.header("webhook-timestamp") == str(timestamp)
    assert request.header("webhook-signature") == "v1,c2ln"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "post"])
def test_put_and_patch_are_sent_as_asked(sink: HttpSink, method: str) -> None:
    assert send(sink, method=method).ok
    assert sink.requests[0].method == method.upper()


def test_other_methods_are_refused_before_sending(sink: HttpSink) -> None:
    with pytest.raises(ValueError, match="method must be one of PATCH, POST, PUT"):
        send(sink, method="GET")
    assert sink.requests == []


def test_a_500_is_transient_and_quotes_the_response(sink: HttpSink) -> None:
    sink.script(Answer(500, body="database\n  is down"))
    outcome = send(sink)
    assert (outcome.kind, outcome.status) == ("transient", 500)
    assert outcome.error == "HTTP 500: database is down"
    assert outcome.retry_after is None


def test_a_400_is_permanent(sink: HttpSink) -> None:
    sink.script(Answer(400, body='{"error": "bad field"}'))
    outcome = send(sink)
    assert (outcome.kind, outcome.status) == ("permanent", 400)
    assert outcome.error == 'HTTP 400: {"error": "bad field"}'


def test_an_error_without_a_body_names_only_the_status(sink: HttpSink) -> None:
    sink.script(Answer(404))
    assert send(sink).error == "HTTP 404"


def test_error_text_quotes_at_most_200_characters_of_the_body(sink: HttpSink) -> None:
    sink.script(Answer(502, body="e" * 5000))
    error = send(sink).error
    assert error is not None and error.startswith("HTTP 502: eee")
    assert len(error) == len("HTTP 502: ") + 200 and error.endswith("e…")


def test_a_429_carries_its_retry_after(sink: HttpSink) -> None:
    sink.script(Answer(429, {"Retry-After": "1"}))
    outcome = send(sink)
    assert (outcome.kind, outcome.status, outcome.retry_after) == ("transient", 429, 1.0)


def test_a_redirect_is_not_followed_and_is_permanent(sink: HttpSink) -> None:
    sink.script(Answer(301, {"Location": sink.url("/elsewhere")}))
    outcome = send(sink)
    assert (outcome.kind, outcome.status) == ("permanent", 301)
    assert outcome.error == f"HTTP 301: redirect to {sink.url('/elsewhere')} not followed"
    assert [r.path for r in sink.requests] == ["/hook"]


def test_a_destination_slower_than_the_timeout_is_a_transient_timeout(sink: HttpSink) -> None:
    sink.script(Answer(200, delay=5.0))
    outcome = send(sink, timeout=0.2)
    assert (outcome.kind, outcome.status, outcome.error) == (
        "transient",
        None,
        "timeout after 0.2s",
    )
    assert outcome.latency < 0.2 + 1.0


def test_a_body_trickling_past_the_timeout_does_not_hold_the_worker(sink: HttpSink) -> None:
    def trickle() -> Iterator[bytes]:
        yield b"slow"
        sink._closing.wait(5.0)  # the test's end (sink closing) releases this
        yield b"never read"

    sink.script(Answer(503, {"Content-Length": "100"}, body=trickle()))
    outcome = send(sink, timeout=0.2)
    assert (outcome.kind, outcome.status) == ("transient", 503)
    assert outcome.error is not None and outcome.error.startswith("HTTP 503")
    assert outcome.latency < 0.2 + 1.0


def test_a_refused_connection_is_transient_with_a_short_message() -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    outcome = send_http(url, b"{}", delivery_id="d", timeout=TIMEOUT)
    assert (outcome.kind, outcome.status) == ("transient", None)
    assert outcome.error is not None and len(outcome.error) < 120
    assert re.fullmatch(r"connection failed: \[Errno \d+\] Connection refused", outcome.error)
    close_session()


def test_an_invalid_url_is_permanent() -> None:
    outcome = send_http("not a url", b"{}", delivery_id="d", timeout=TIMEOUT)
    assert outcome.kind == "permanent"
    assert outcome.error is not None and outcome.error.startswith("invalid request:")
    close_session()


class Counted:
    """A huge streamed body that counts how much of it the sink managed to hand out."""

    def __init__(self, total: int) -> None:
        self.total, self.served = total, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in iter_chunks(self.total):
            self.served += len(chunk)
            yield chunk


HUGE = 1024 * 1024 * 1024  # 1 GiB offered; relay must stop after 64 KiB


def test_a_huge_error_body_is_read_only_up_to_the_cap(sink: HttpSink) -> None:
    body = Counted(HUGE)
    sink.script(Answer(500, {"Content-Length": str(HUGE)}, body=body))
    outcome = send(sink, timeout=2.0)
    sink.close()  # wait until the sink gives up writing, so ``served`` is final
    assert (outcome.kind, outcome.status) == ("transient", 500)
    assert outcome.error == "HTTP 500: " + "x" * 199 + "…"
    assert body.served < 32 * 1024 * 1024  # 64 KiB read plus what socket buffers took


def test_a_huge_success_body_is_still_ok(sink: HttpSink) -> None:
    body = Counted(HUGE)
    sink.script(Answer(200, {"Content-Length": str(HUGE)}, body=body))
    assert send(sink, timeout=2.0).ok
    sink.close()
    assert body.served < 32 * 1024 * 1024


def test_connections_are_reused_across_sends(sink: HttpSink) -> None:
    close_session()  # no connection left open to another test's receiver
    for _ in range(3):
        assert send(sink).ok
    assert len(sink.requests) == 3
    assert sink.accepted == 1  # the receiver saw one connection carry all three
    assert get_session() is get_session()
    close_session()


def test_a_forked_child_gets_its_own_session(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = get_session()
    # as after os.fork(): the session was made by another process (patching os.getpid
    # would change it for every thread of the test run, the sink's and pytest's included)
    monkeypatch.setattr(relay.actions.sessions, "_session_pid", -1)
    child = get_session()
    assert child is not parent and get_session() is child
    close_session()


def test_close_session_makes_the_next_send_open_a_new_one() -> None:
    first = get_session()
    close_session()
    assert get_session() is not first
    close_session()


def test_an_explicit_session_is_used_instead_of_the_shared_one(sink: HttpSink) -> None:
    with requests.Session() as session:
        assert send(sink, session=session).ok
    assert len(sink.requests) == 1


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("event", b'{"a": 1}', "application/json"),
        ("raw", b"[1, 2]", "application/json"),
        ("template", b'{"text": "hi"}', "application/json"),
        ("template", b'"just a string"', "application/json"),
        ("template", b"SMS to ***1234 failed", "text/plain; charset=utf-8"),
        ("template", b"\xff\xfe", "text/plain; charset=utf-8"),
        ("template", b"", "text/plain; charset=utf-8"),
    ],
)
def test_content_type_for_a_rendered_body(kind: str, body: bytes, expected: str) -> None:
    assert content_type_for(kind, body) == expected


def test_a_template_body_is_sent_with_its_content_type(sink: HttpSink) -> None:
    body = "Stat\u00fcs: failed".encode()
    send(sink, body, content_type=content_type_for("template", body))
    (request,) = sink.requests
    assert request.header("Content-Type") == "text/plain; charset=utf-8"
    assert request.body.decode() == "Statüs: failed"


def test_a_cookie_a_receiver_sets_is_never_sent_with_a_later_delivery(sink: HttpSink) -> None:
    """Every destination on a host shares the process's session: a cookie one answer set
    would go out with every later delivery there, to whichever destination."""
    sink.script(Answer(200, headers={"Set-Cookie": "session=abc; Path=/"}))
    assert send(sink, delivery_id="dlv-1").ok
    assert send(sink, delivery_id="dlv-2").ok
    first, second = sink.requests
    assert second.header("Cookie") is None
    assert second.header("webhook-id") == "dlv-2"


def test_the_session_default_headers_go_out_under_the_request_own(sink: HttpSink) -> None:
    assert send(sink, headers={"accept": "application/json"}).ok
    (request,) = sink.requests
    accepts = [value for name, value in request.headers if name.lower() == "accept"]
    assert accepts == ["application/json"]  # the destination's, in any case, not */* too
    assert request.header("Accept-Encoding") == "gzip, deflate"  # requests' default kept
    assert request.header("User-Agent") == f"relay/{__version__} (+webex-connect-relay)"
    assert request.header("Content-Length") == str(len(b'{"a": 1}'))


def test_a_proxy_from_the_environment_is_used(
    sink: HttpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With proxy variables set, deliveries go through requests' whole path, which
    applies them: here the sink is the proxy, and sees the absolute URL."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", sink.url())
    close_session()  # the next session reads the environment
    try:
        url = "http://relay-proxy-test.invalid/hook"
        assert send_http(url, b"{}", delivery_id="dlv-1", timeout=TIMEOUT).ok
    finally:
        close_session()
    (request,) = sink.requests
    assert request.path == "http://relay-proxy-test.invalid/hook"
    assert request.header("webhook-id") == "dlv-1"
