"""send_sms against a real local HTTP server (tests/httpsink.py) speaking Webex Connect."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator

import pytest

from relay.actions import close_session
from relay.actions.sms import (
    GSM_BASIC,
    content_type_for_text,
    idempotency_key_for,
    send_sms,
)
from tests.httpsink import Answer, HttpSink, closed_port

TIMEOUT = 0.5  # seconds: every test here finishes in well under that when all is well
SERVICE_KEY = "svc-KEY-0123456789abcdef"
JSON = {"Content-Type": "application/json"}
ACCEPTED = {
    "acceptedTime": "2026-05-09T07:35:25.123Z",
    "messageId": "b6c2d0e4-8f0a-4b4e-9c1f-6d2a3e5f7a90",
    "correlationId": "evt-1:help-reply",
}


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with HttpSink() as running:
        yield running
    close_session()


def send(sink: HttpSink, **kwargs: object):
    kwargs.setdefault("from_", "+14155550100")
    kwargs.setdefault("to", "+1 (415) 555-0199")
    kwargs.setdefault("content", "ACME: reply STOP to opt out.")
    kwargs.setdefault("correlation_id", "evt-1:help-reply")
    kwargs.setdefault("idempotency_key", "evt-1:help-reply")
    kwargs.setdefault("timeout", TIMEOUT)
    return send_sms(sink.url(), SERVICE_KEY, **kwargs)  # type: ignore[arg-type]


def webex(status: int, body: dict, **headers: str) -> Answer:
    return Answer(status, {**JSON, **headers}, json.dumps(body))


# -- content type ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello", "text"),
        ("€10 {ok}", "text"),
        ("^{}\\[~]|€", "text"),
        ("Ça coûte 5£ @ Ø, ÄÖÑÜ§ ¿¡ äöñüà", "unicode"),  # û is not GSM
        ("Ça marche: 5£ @ Ø, ÄÖÑÜ§ ¿¡ äöñüà ΔΦΓΛΩΠΨΣΘΞ", "text"),
        ("line 1\nline 2\r\n", "text"),
        ("", "text"),
        ("Привет", "unicode"),
        ("😀", "unicode"),
        ("tab\there", "unicode"),
        ("`backtick`", "unicode"),
        ("ç", "unicode"),  # only the capital Ç is in the table
    ],
)
def test_content_type_is_text_only_for_the_gsm_alphabet(text: str, expected: str) -> None:
    assert content_type_for_text(text) == expected


def test_the_gsm_basic_alphabet_has_its_128_characters() -> None:
    assert len(GSM_BASIC) == len(set(GSM_BASIC)) == 127  # + ESC, the extension table's door
    assert content_type_for_text(GSM_BASIC) == "text"


# -- the request ----------------------------------------------------------------------------


def test_an_accepted_message_is_ok_and_the_request_is_as_webex_wants(sink: HttpSink) -> None:
    sink.script(webex(202, ACCEPTED))
    outcome = send(sink, callback_data="route=help")
    assert (outcome.kind, outcome.status, outcome.error) == ("ok", 202, None)
    assert 0 < outcome.latency < TIMEOUT
    (request,) = sink.requests
    assert (request.method, request.path) == ("POST", "/v1/sms/messages")
    assert json.loads(request.body) == {
        "from": "14155550100",
        "to": "+14155550199",
        "content": "ACME: reply STOP to opt out.",
        "contentType": "text",
        "correlationId": "evt-1:help-reply",
        "callbackData": "route=help",
    }
    assert request.header("Authorization") == SERVICE_KEY
    assert request.header("Idempotency-Key") == "evt-1:help-reply"
    assert request.header("Content-Type") == "application/json"


def test_without_callback_data_the_body_has_no_such_key(sink: HttpSink) -> None:
    sink.script(webex(202, ACCEPTED))
    assert send(sink, content="Привет", from_="ACME").ok
    body = sink.requests[0].json()
    assert isinstance(body, dict) and "callbackData" not in body
    assert (body["from"], body["contentType"], body["content"]) == ("ACME", "unicode", "Привет")


def test_the_key_header_name_is_configurable(sink: HttpSink) -> None:
    sink.script(webex(202, ACCEPTED))
    assert send(sink, key_header="key").ok
    (request,) = sink.requests
    assert request.header("key") == SERVICE_KEY
    assert request.header("Authorization") is None


def test_a_trailing_slash_on_the_api_url_is_fine(sink: HttpSink) -> None:
    sink.script(webex(202, ACCEPTED))
    outcome = send_sms(
        sink.url("/"), SERVICE_KEY, from_="1", to="2", content="x",
        correlation_id="c", idempotency_key="k", timeout=TIMEOUT,
    )  # fmt: skip
    assert outcome.ok
    assert sink.requests[0].path == "/v1/sms/messages"


def test_a_long_idempotency_key_becomes_its_sha256_hex(sink: HttpSink) -> None:
    long_key = "evt-" + "x" * 80 + ":help-reply"
    sink.script(webex(202, ACCEPTED))
    assert send(sink, idempotency_key=long_key).ok
    expected = hashlib.sha256(long_key.encode()).hexdigest()
    assert sink.requests[0].header("Idempotency-Key") == expected
    assert len(expected) == 64


@pytest.mark.parametrize(
    ("key", "hashed"),
    [("a" * 64, False), ("a" * 65, True), ("évt-1", True), ("a\nb", True), ("evt 1:x", False)],
)
def test_idempotency_keys_are_hashed_only_when_they_cannot_be_sent(key: str, hashed: bool) -> None:
    expected = hashlib.sha256(key.encode()).hexdigest() if hashed else key
    assert idempotency_key_for(key) == expected


# -- refused before sending -----------------------------------------------------------------


def test_content_over_4000_characters_is_permanent_and_not_sent(sink: HttpSink) -> None:
    outcome = send(sink, content="x" * 4001)
    assert (outcome.kind, outcome.error) == (
        "permanent",
        "SMS content is 4001 characters, over 4000 (not sent)",
    )
    assert sink.requests == []
    sink.script(webex(202, ACCEPTED))
    assert send(sink, content="x" * 4000).ok


@pytest.mark.parametrize(("to", "content"), [("+1 555", ""), ("unknown", "hi")])
def test_empty_content_or_a_recipient_without_digits_is_permanent(
    sink: HttpSink, to: str, content: str
) -> None:
    assert send(sink, to=to, content=content).kind == "permanent"
    assert sink.requests == []


# -- the answer -----------------------------------------------------------------------------


def test_a_7004_is_permanent_with_code_and_message(sink: HttpSink) -> None:
    sink.script(webex(400, {"code": "7004", "message": "Invalid request payload: to"}))
    outcome = send(sink)
    assert (outcome.kind, outcome.status, outcome.error) == (
        "permanent",
        400,
        "HTTP 400 7004: Invalid request payload: to",
    )


def test_a_rejected_key_is_permanent_and_the_key_is_never_in_the_error(
    sink: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink.script(webex(403, {"code": "7001", "message": "Authentication failed."}))
    outcome = send(sink)
    assert (outcome.kind, outcome.status, outcome.error) == (
        "permanent",
        403,
        "HTTP 403 7001: Authentication failed.",
    )
    assert SERVICE_KEY not in repr(outcome) + str(outcome.error) + caplog.text


def test_a_key_echoed_by_the_server_is_masked(sink: HttpSink) -> None:
    sink.script(webex(401, {"code": "7001", "message": f"unknown key {SERVICE_KEY}"}))
    assert send(sink).error == "HTTP 401 7001: unknown key ***"


def test_other_4xx_are_permanent_with_the_body(sink: HttpSink) -> None:
    sink.script(Answer(404, {"Content-Type": "text/plain"}, "Not Found"))
    outcome = send(sink)
    assert (outcome.kind, outcome.error, outcome.retry_after) == (
        "permanent",
        "HTTP 404: Not Found",
        None,
    )


def test_429_is_transient_with_retry_after(sink: HttpSink) -> None:
    sink.script(
        webex(429, {"code": "1002", "message": "Too many requests"}, **{"Retry-After": "7"})
    )
    outcome = send(sink)
    assert (outcome.kind, outcome.status, outcome.retry_after) == ("transient", 429, 7.0)
    assert outcome.error == "HTTP 429 1002: Too many requests"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_transient_and_the_retry_is_idempotent(sink: HttpSink, status: int) -> None:
    sink.script(
        Answer(status, {"Content-Type": "text/html"}, "<h1>oops</h1>"), webex(202, ACCEPTED)
    )
    first, second = send(sink), send(sink)
    assert (first.kind, first.error) == ("transient", f"HTTP {status}: <h1>oops</h1>")
    assert second.ok
    keys = {r.header("Idempotency-Key") for r in sink.requests}
    assert keys == {"evt-1:help-reply"}


def test_a_slow_api_is_a_transient_timeout(sink: HttpSink) -> None:
    sink.script(Answer(202, JSON, json.dumps(ACCEPTED), delay=2.0))
    outcome = send(sink, timeout=0.2)
    assert (outcome.kind, outcome.error) == ("transient", "timeout after 0.2s")


def test_an_unreachable_api_is_transient_without_the_key() -> None:
    outcome = send_sms(
        f"http://127.0.0.1:{closed_port()}", SERVICE_KEY, from_="1", to="2", content="x",
        correlation_id="c", idempotency_key="k", timeout=TIMEOUT,
    )  # fmt: skip
    assert outcome.kind == "transient"
    assert outcome.error is not None and "Connection refused" in outcome.error
    assert SERVICE_KEY not in outcome.error


@pytest.mark.parametrize(
    ("key", "header"),
    [(SERVICE_KEY + "\r\nX-Evil: 1", "Authorization"), (SERVICE_KEY + "’", "Authorization"),
     (SERVICE_KEY, "bad header:")],
)  # fmt: skip
def test_a_key_or_header_that_cannot_be_sent_is_permanent_and_not_quoted(
    sink: HttpSink, key: str, header: str
) -> None:
    outcome = send_sms(
        sink.url(), key, key_header=header, from_="1", to="2", content="x",
        correlation_id="c", idempotency_key="k", timeout=TIMEOUT,
    )  # fmt: skip
    assert (outcome.kind, outcome.error) == ("permanent", "invalid URL or header value (not sent)")
    assert sink.requests == []
