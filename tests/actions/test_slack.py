"""Slack senders against a real local HTTP server (tests/httpsink.py) speaking Slack's formats."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from relay.actions import close_session
from relay.actions.slack import build_payload, send_slack_api, send_slack_webhook
from tests.httpsink import Answer, HttpSink, closed_port

TIMEOUT = 0.5  # seconds: every test here finishes in well under that when all is well
TOKEN = "xoxb-1234-5678-SeCrEtToKeN"
HOOK_PATH = "/services/T000/B000/HookSecret42"

SLACK_TEXT = {"Content-Type": "text/html"}  # what hooks.slack.com labels its plain answers
SLACK_JSON = {"Content-Type": "application/json; charset=utf-8"}


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with HttpSink() as running:
        yield running
    close_session()


def hook(sink: HttpSink, payload: object = None, **kwargs: object):
    kwargs.setdefault("timeout", TIMEOUT)
    return send_slack_webhook(sink.url(HOOK_PATH), payload or {"text": "hi"}, **kwargs)  # type: ignore[arg-type]


def api(sink: HttpSink, payload: object = None, **kwargs: object):
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("api_url", sink.url("/api"))
    return send_slack_api(TOKEN, "C0123", payload or {"text": "hi"}, **kwargs)  # type: ignore[arg-type]


def api_answer(body: dict, status: int = 200, **headers: str) -> Answer:
    return Answer(status, {**SLACK_JSON, **headers}, json.dumps(body))


# -- build_payload --------------------------------------------------------------------------


def test_a_payload_is_the_text_alone_without_blocks() -> None:
    assert build_payload("SMS failed", None) == {"text": "SMS failed"}


def test_blocks_json_is_parsed_into_the_payload() -> None:
    blocks = '[{"type": "section", "text": {"type": "mrkdwn", "text": "*7104*"}}]'
    assert build_payload("SMS failed", blocks) == {
        "text": "SMS failed",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*7104*"}}],
    }


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ("[{", "blocks is not valid JSON: Expecting property name enclosed in double quotes"),
        ('{"type": "section"}', "blocks must be a JSON list of objects, got an object"),
        ('"section"', "blocks must be a JSON list of objects, got a string"),
        ("null", "blocks must be a JSON list of objects, got null"),
        ('[{"type": "divider"}, 3]', "blocks[1] must be an object, got a number"),
        ('[["x"]]', "blocks[0] must be an object, got a list"),
        ('[{"text": "no type"}]', 'blocks[0] has no "type"'),
    ],
)
def test_bad_blocks_are_a_clear_value_error(blocks: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        build_payload("t", blocks)
    assert str(raised.value).startswith(message)


# -- incoming webhooks ----------------------------------------------------------------------


def test_a_webhook_ok_answer_is_ok_and_the_payload_arrives_as_json(sink: HttpSink) -> None:
    sink.script(Answer(200, SLACK_TEXT, "ok"))
    outcome = hook(sink, {"text": "SMS to ••••1234 Failed ✓", "blocks": [{"type": "divider"}]})
    assert (outcome.kind, outcome.status, outcome.error) == ("ok", 200, None)
    assert 0 < outcome.latency < TIMEOUT
    (request,) = sink.requests
    assert (request.method, request.path) == ("POST", HOOK_PATH)
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    assert request.json() == {"text": "SMS to ••••1234 Failed ✓", "blocks": [{"type": "divider"}]}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid_payload"),
        (400, "no_text"),
        (403, "action_prohibited"),
        (403, "invalid_token"),
        (404, "channel_not_found"),
        (404, "no_service"),
        (410, "no_service"),
        (410, "channel_is_archived"),
    ],
)
def test_webhook_errors_are_permanent_and_name_slacks_code(
    sink: HttpSink, status: int, code: str
) -> None:
    sink.script(Answer(status, SLACK_TEXT, code))
    outcome = hook(sink)
    assert (outcome.kind, outcome.status, outcome.error) == (
        "permanent",
        status,
        f"HTTP {status}: {code}",
    )
    assert outcome.retry_after is None


def test_a_rate_limited_webhook_is_transient_with_retry_after(sink: HttpSink) -> None:
    sink.script(Answer(429, {**SLACK_TEXT, "Retry-After": "3"}, "rate_limited"))
    outcome = hook(sink)
    assert (outcome.kind, outcome.status, outcome.retry_after) == ("transient", 429, 3.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_webhook_5xx_is_transient(sink: HttpSink, status: int) -> None:
    sink.script(Answer(status, SLACK_TEXT, "rollup_error"))
    outcome = hook(sink)
    assert (outcome.kind, outcome.error) == ("transient", f"HTTP {status}: rollup_error")


def test_the_webhook_url_is_never_in_an_error() -> None:
    secret_url = f"http://127.0.0.1:{closed_port()}{HOOK_PATH}"
    outcomes = [
        send_slack_webhook(secret_url, {"text": "hi"}, timeout=TIMEOUT),
        send_slack_webhook(f"ftp://x{HOOK_PATH}", {"text": "hi"}),
        send_slack_webhook(f"http://[bad{HOOK_PATH}", {"text": "hi"}),
        send_slack_webhook(HOOK_PATH, {"text": "hi"}),
    ]
    assert [o.kind for o in outcomes] == ["transient", "permanent", "permanent", "permanent"]
    for outcome in outcomes:
        assert outcome.error is not None and "HookSecret42" not in outcome.error


def test_a_slow_webhook_is_a_transient_timeout(sink: HttpSink) -> None:
    sink.script(Answer(200, SLACK_TEXT, "ok", delay=2.0))
    outcome = hook(sink, timeout=0.2)
    assert (outcome.kind, outcome.error) == ("transient", "timeout after 0.2s")


# -- Web API chat.postMessage ---------------------------------------------------------------


def test_chat_post_message_sends_channel_payload_and_bearer_token(sink: HttpSink) -> None:
    sink.script(api_answer({"ok": True, "channel": "C0123", "ts": "1503435956.000247"}))
    outcome = api(sink, {"text": "Привет", "blocks": [{"type": "divider"}]})
    assert (outcome.kind, outcome.status, outcome.error) == ("ok", 200, None)
    (request,) = sink.requests
    assert (request.method, request.path) == ("POST", "/api/chat.postMessage")
    assert request.header("Authorization") == f"Bearer {TOKEN}"
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    assert list(json.loads(request.body)) == ["channel", "text", "blocks"]
    assert request.json() == {"channel": "C0123", "text": "Привет", "blocks": [{"type": "divider"}]}


def test_a_trailing_slash_on_the_api_url_is_fine(sink: HttpSink) -> None:
    sink.script(api_answer({"ok": True}))
    assert api(sink, api_url=sink.url("/api/")).ok
    assert sink.requests[0].path == "/api/chat.postMessage"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("internal_error", "transient"),
        ("fatal_error", "transient"),
        ("service_unavailable", "transient"),
        ("request_timeout", "transient"),
        ("ratelimited", "transient"),
        ("invalid_auth", "permanent"),
        ("not_authed", "permanent"),
        ("account_inactive", "permanent"),
        ("token_revoked", "permanent"),
        ("channel_not_found", "permanent"),
        ("not_in_channel", "permanent"),
        ("is_archived", "permanent"),
        ("msg_too_long", "permanent"),
        ("no_text", "permanent"),
        ("invalid_blocks", "permanent"),
        ("missing_scope", "permanent"),
        ("some_error_slack_adds_next_year", "permanent"),
    ],
)
def test_api_errors_are_classified_by_slacks_code(sink: HttpSink, code: str, kind: str) -> None:
    sink.script(api_answer({"ok": False, "error": code}))
    outcome = api(sink)
    assert (outcome.kind, outcome.status, outcome.error) == (
        kind,
        200,
        f"Slack API error: {code}",
    )


def test_a_rate_limited_api_call_is_transient_with_retry_after_and_no_token(
    sink: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink.script(api_answer({"ok": False, "error": "ratelimited"}, 429, **{"Retry-After": "3"}))
    outcome = api(sink)
    assert (outcome.kind, outcome.status, outcome.retry_after) == ("transient", 429, 3.0)
    assert outcome.error == "Slack API error: ratelimited"
    assert TOKEN not in repr(outcome) + str(outcome.error) + caplog.text


def test_slacks_explanations_of_invalid_blocks_are_in_the_error(sink: HttpSink) -> None:
    sink.script(
        api_answer(
            {
                "ok": False,
                "error": "invalid_blocks",
                "response_metadata": {
                    "messages": ["[ERROR] must provide a string [json-pointer:/blocks/0/text]"]
                },
            }
        )
    )
    assert api(sink).error == (
        "Slack API error: invalid_blocks "
        "([ERROR] must provide a string [json-pointer:/blocks/0/text])"
    )


@pytest.mark.parametrize("status", [500, 502, 503])
def test_api_5xx_is_transient(sink: HttpSink, status: int) -> None:
    sink.script(Answer(status, {"Content-Type": "text/html"}, "<html>upstream error</html>"))
    outcome = api(sink)
    assert (outcome.kind, outcome.error) == (
        "transient",
        f"HTTP {status}: <html>upstream error</html>",
    )


def test_a_2xx_that_is_not_slacks_json_is_transient(sink: HttpSink) -> None:
    sink.script(Answer(200, {"Content-Type": "text/html"}, "<html>maintenance</html>"))
    assert api(sink).kind == "transient"


def test_an_api_4xx_without_json_is_permanent(sink: HttpSink) -> None:
    sink.script(Answer(404, {"Content-Type": "text/plain"}, "not found"))
    outcome = api(sink)
    assert (outcome.kind, outcome.error) == ("permanent", "HTTP 404: not found")


def test_a_token_echoed_by_the_server_is_masked(sink: HttpSink) -> None:
    sink.script(api_answer({"ok": False, "error": f"bad token {TOKEN}"}))
    outcome = api(sink)
    assert outcome.error == "Slack API error: bad token ***"


@pytest.mark.parametrize("token", [f"{TOKEN}\r\nX-Evil: 1", f"{TOKEN}’"])
def test_a_token_that_cannot_be_a_header_is_permanent_and_not_quoted(
    sink: HttpSink, token: str
) -> None:
    outcome = send_slack_api(token, "C1", {"text": "hi"}, api_url=sink.url("/api"))
    assert outcome.kind == "permanent"
    assert outcome.error is not None and "SeCrEt" not in outcome.error and "’" not in outcome.error
    assert sink.requests == []


def test_an_unreachable_api_is_transient() -> None:
    api_url = f"http://127.0.0.1:{closed_port()}/api"
    outcome = send_slack_api(TOKEN, "C1", {"text": "hi"}, api_url=api_url, timeout=TIMEOUT)
    assert outcome.kind == "transient"
    assert outcome.error is not None and TOKEN not in outcome.error
