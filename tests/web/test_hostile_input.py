"""Hostile bodies, headers and content types: always a 4xx or accepted, never a 500 or a hang.

Against the Flask app of the suite's real Redis. Oversized and chunked bodies over a real
socket are in test_hostile_server.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from relay.rules import load_rules_text
from relay.rules.reloader import StaticRules
from relay.settings import DEFAULT_MAX_BODY_BYTES, load_settings
from relay.state import Store, connect
from relay.web.app import create_app
from relay.web.ingest import MAX_ARRAY, MAX_DEPTH
from relay.worker.routing import route_event
from relay.worker.runtime import Runtime
from tests.harness import FIXTURES, relay_env

URL = "/webhooks/webex-connect"
ALLOWED = {200, 400, 401, 413, 415}
MESSAGE = {"oa": "447700900123", "da": "12345", "message": "hello"}


def post(client, body: bytes, content_type: str | None = "application/json", **kwargs):
    headers = kwargs.pop("headers", {})
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post(URL, data=body, headers=headers, **kwargs)


def queued_events(redis_client) -> list[dict]:
    """The events waiting in the inbox, decoded from their stored routing tasks as the
    pump and the worker decode them."""
    ids = reversed(redis_client.lrange("relay:inbox", 0, -1))  # oldest first
    specs = [redis_client.hget("relay:pending:tasks", f"route:{i}") for i in ids]
    return [json.loads(spec)["args"][0] for spec in specs]


def nested(depth: int) -> bytes:
    """An inbound message whose JSON nests ``depth`` levels (the message object is 1)."""
    return (
        b'{"oa": "1", "da": "2", "message": "x", "extra": '
        + b"[" * (depth - 1)
        + b"]" * (depth - 1)
        + b"}"
    )


# -- nesting and array limits -------------------------------------------------------------


def test_nesting_up_to_the_limit_is_accepted(client):
    assert post(client, nested(MAX_DEPTH)).status_code == 200


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100, 900, 5_000, 30_000])
def test_nesting_past_the_limit_is_400(client, redis_client, depth):
    started = time.monotonic()
    answer = post(client, nested(depth))
    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_payload"
    assert "nested" in answer.json["detail"]
    assert time.monotonic() - started < 1.0
    assert redis_client.llen("relay:inbox") == 0


@pytest.mark.parametrize("opener", [b"[", b'{"a":', b'[{"a":'])
def test_bare_deep_nesting_of_every_kind_is_400(client, opener):
    assert post(client, opener * (60_000 // len(opener))).status_code == 400


def test_an_array_up_to_the_limit_is_accepted(client):
    body = {**MESSAGE, "extra": [0] * MAX_ARRAY}
    assert post(client, json.dumps(body).encode()).status_code == 200


@pytest.mark.parametrize("where", ["extra", "batch"])
def test_an_array_past_the_limit_is_400(client, redis_client, where):
    if where == "batch":
        body = [{**MESSAGE, "message": str(i)} for i in range(MAX_ARRAY + 1)]
    else:
        body = {**MESSAGE, "extra": [0] * (MAX_ARRAY + 1)}
    answer = post(client, json.dumps(body, separators=(",", ":")).encode())
    assert answer.status_code == 400
    assert "more than" in answer.json["detail"]
    assert redis_client.llen("relay:inbox") == 0


# -- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1E400", b"123e1234567"],
)
@pytest.mark.parametrize("field", ["extra", "message", "code"])
def test_non_finite_numbers_are_400(client, redis_client, value, field):
    if field == "code":
        body = (
            b'{"deliveryInfoNotification": {"deliveryInfo": {"deliveryStatus": "Delivered", '
            b'"code": ' + value + b"}}}"
        )
    else:
        body = b'{"oa": "1", "da": "2", "message": "m", "' + field.encode() + b'": ' + value + b"}"
    answer = post(client, body)
    assert answer.status_code == 400, answer.json
    assert redis_client.llen("relay:inbox") == 0


@pytest.mark.parametrize("digits", [4301, 5_000, 60_000])
def test_integers_past_pythons_digit_limit_are_400_not_500(client, digits):
    body = b'{"oa": "1", "da": "2", "message": "m", "n": 1' + b"0" * (digits - 1) + b"}"
    started = time.monotonic()
    answer = post(client, body)
    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_payload"
    assert time.monotonic() - started < 1.0


def test_a_4000_digit_integer_is_accepted_and_survives_the_queue(client, redis_client):
    big = 10**3999
    body = json.dumps({**MESSAGE, "n": big, "code_like": -big}).encode()
    assert post(client, body).status_code == 200
    (event,) = queued_events(redis_client)
    assert event["raw"]["n"] == big


@pytest.mark.parametrize("value", [b"1e-999", b"-0", b"0.1e-400", b"1.7976931348623157e308"])
def test_extreme_but_finite_numbers_are_accepted(client, value):
    body = b'{"oa": "1", "da": "2", "message": "m", "n": ' + value + b"}"
    assert post(client, body).status_code == 200


# -- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe\xfd",
        b'{"oa": "1", "da": "2", "message": "\xc0\xaf"}',  # overlong encoding
        b'{"oa": "1", "da": "2", "message": "\xf4\x90\x80\x80"}',  # past U+10FFFF
        b'{"oa": "1", "da": "2", "message": "caf\xe9"}',  # latin-1
        b'{"oa": "1", "da": "2", "message": "\x00"}',  # raw control character
    ],
)
def test_invalid_utf8_and_raw_control_characters_are_400(client, body):
    answer = post(client, body)
    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_payload"


@pytest.mark.parametrize(
    "text",
    [
        "emoji 🧨💥 and ZWJ 👩‍👩‍👧",
        "right-to-left \u202e gnirts",
        "nul \u0000 and bell \u0007 escaped",
        "line sep \u2028 para sep \u2029",
        "noncharacters \ufffe \uffff \U0010ffff",
        "combining e\u0301\u0301\u0301\u0301",
        "{{ 7*7 }} {% raw %} ${jndi:ldap://x} '; DROP TABLE x; --",
        "x" * 20_000,
    ],
)
def test_any_unicode_text_is_accepted_and_kept(client, redis_client, text):
    for ensure_ascii in (True, False):
        redis_client.delete("relay:inbox")
        body = json.dumps(
            {**MESSAGE, "message": text, "n": ensure_ascii}, ensure_ascii=ensure_ascii
        )
        assert post(client, body.encode()).status_code == 200
        (event,) = queued_events(redis_client)
        assert event["text"] == text


def test_a_utf8_encoded_surrogate_is_replaced_like_its_escape(client, redis_client):
    """json.loads decodes with "surrogatepass": the same lone surrogate as ``\\ud800``,
    replaced by U+FFFD the same way."""
    body = b'{"oa": "1", "da": "2", "message": "\xed\xa0\x80", "\xed\xa0\x80": 1}'
    assert post(client, body).status_code == 200
    (event,) = queued_events(redis_client)
    assert event["text"] == "\ufffd"
    assert event["raw"] == {"oa": "1", "da": "2", "message": "\ufffd", "\ufffd": 1}


def test_duplicate_keys_are_accepted_and_the_last_wins(client, redis_client):
    body = b'{"oa": "1", "da": "2", "message": "first", "message": "second"}'
    assert post(client, body).status_code == 200
    (event,) = queued_events(redis_client)
    assert event["text"] == "second"


def test_case_variant_keys_prefer_the_documented_spelling(client, redis_client):
    body = b'{"oa": "1", "da": "2", "MESSAGE": "variant", "message": "exact"}'
    assert post(client, body).status_code == 200
    (event,) = queued_events(redis_client)
    assert event["text"] == "exact"


# -- lone surrogates downstream ------------------------------------------------------------

SURROGATES = "lone \ud800 high, lone \udfff low, pair \ud83d\ude00"


def test_lone_surrogates_are_replaced_at_the_door_and_routed(client, redis_client, settings, sink):
    body = json.dumps({**MESSAGE, "message": SURROGATES, "x": {"\udbff": "\udc00"}}).encode()
    assert body.isascii()
    assert post(client, body).status_code == 200
    (event,) = queued_events(redis_client)  # decoded as the worker decodes it
    assert event["text"] == "lone \ufffd high, lone \ufffd low, pair \U0001f600"

    ruleset = load_rules_text(
        f"""
version: 1
destinations:
  event: {{type: http, url: "{sink.url("/event")}"}}
  raw: {{type: http, url: "{sink.url("/raw")}", body: raw}}
  text: {{type: http, url: "{sink.url("/text")}", body: "said {{{{ event.text }}}}"}}
  trace: {{type: log, text: "{{{{ event.text }}}} from {{{{ event.sender }}}}"}}
routes: [{{name: all, to: [event, raw, text, trace]}}]
"""
    )
    store = Store(connect(settings.redis_url), 3600, 3600)
    jobs: list[dict] = []
    runtime = Runtime(
        settings=settings,
        store=store,
        rules=StaticRules(ruleset),
        schedule=lambda job, countdown: jobs.append(job),
        max_hop=60,
    )
    assert route_event(runtime, event) == ["delivered"] * 4
    assert jobs == []  # first attempts run inline; only retries are scheduled
    assert {entry["step"] for entry in store.history(event["id"])} >= {"received", "delivered"}
    received = {request.path: request.body for request in sink.requests}
    assert json.loads(received["/event"])["text"] == event["text"]
    assert json.loads(received["/raw"])["x"] == {"\ufffd": "\ufffd"}
    assert received["/text"].decode().startswith("said lone ")


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ({**MESSAGE, "tid": "t-\ud800"}, "tid", "t-\ufffd"),
        (
            {
                "deliveryInfoNotification": {
                    "deliveryInfo": {"deliveryStatus": "Failed"},
                    "transid": "\udfff",
                }
            },
            "transid",
            "\ufffd",
        ),
    ],
)
def test_a_lone_surrogate_in_a_reference_is_replaced(client, redis_client, body, field, expected):
    """transid and tid become Redis keys, which must encode as UTF-8: valid text can."""
    answer = post(client, json.dumps(body).encode())
    assert answer.status_code == 200
    (event,) = queued_events(redis_client)
    assert event[field] == expected


@pytest.mark.parametrize("kind", ["slack", "sms_reply"])
def test_lone_surrogates_reach_slack_and_sms_replies(sink, kind):
    from relay.events import delivery_id
    from relay.parsing import build_events
    from relay.worker.delivery import perform

    destination = {
        "slack": f'{{type: slack, webhook_url: "{sink.url()}", text: "{{{{ event.text }}}}"}}',
        "sms_reply": '{type: sms_reply, text: "re: {{ event.text }}"}',
    }[kind]
    ruleset = load_rules_text(
        f"version: 1\ndestinations:\n  d: {destination}\nroutes: [{{name: all, to: [d]}}]\n"
    )
    (event,), _ = build_events({**MESSAGE, "message": SURROGATES}, "default", frozenset())
    job = {
        "event": event,
        "route": "all",
        "destination": "d",
        "delivery_id": delivery_id(event["id"], "d"),
    }
    settings = load_settings(
        {"RELAY_WEBEX_API_URL": sink.url("").rstrip("/"), "RELAY_WEBEX_SERVICE_KEY": "k"}
    )
    assert perform(ruleset.destinations["d"], job, settings).ok


# -- bodies and content types -------------------------------------------------------------


def test_chunked_body_over_the_limit_is_413(client, redis_client):
    body = json.dumps({**MESSAGE, "message": "x" * DEFAULT_MAX_BODY_BYTES}).encode()
    answer = client.post(
        URL,
        data=body,
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert answer.status_code == 413
    assert answer.json["error"] == "payload_too_large"
    assert redis_client.llen("relay:inbox") == 0


@pytest.mark.parametrize("size", [100, DEFAULT_MAX_BODY_BYTES])
def test_chunked_body_within_the_limit_is_read_whole(client, size):
    body = json.dumps(MESSAGE).encode()
    body += b" " * (size - len(body))  # up to exactly RELAY_MAX_BODY_BYTES
    answer = client.post(
        URL,
        data=body,
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert answer.status_code == 200, answer.json


def test_content_length_over_the_limit_is_413_without_reading(client):
    class Unreadable:
        def read(self, *args):
            raise AssertionError("the body was read")

        readline = readinto = read

    answer = client.post(
        URL,
        content_type="application/json",
        environ_overrides={"wsgi.input": Unreadable(), "CONTENT_LENGTH": str(10**12)},
    )
    assert answer.status_code == 413


# -- property-based: whatever arrives ------------------------------------------------------

SECRET, USER, PASSWORD, KEY_HEADER, KEY = "hub-secret", "webex", "pw", "X-Relay-Key", "k3y"

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)
field_values = json_values | st.text() | st.integers() | st.sampled_from(["", "Delivered", "7500"])
receipts = st.fixed_dictionaries(
    {
        "deliveryInfoNotification": st.fixed_dictionaries(
            {
                "deliveryInfo": st.dictionaries(
                    st.sampled_from(["deliveryStatus", "code", "Description", "DELIVERYSTATUS"]),
                    field_values,
                )
            },
            optional={"transid": field_values, "subtid": field_values},
        )
    }
)
messages = st.fixed_dictionaries(
    {"oa": field_values, "da": field_values, "message": field_values},
    optional={"tid": field_values, "userld": field_values, "Channel": field_values},
)
fixtures = st.sampled_from(sorted(FIXTURES.glob("*.json"))).map(lambda p: p.read_bytes())
documents = receipts | messages | st.lists(receipts | messages, min_size=0, max_size=3)
serialized = st.tuples(documents | json_values, st.booleans()).map(
    lambda pair: json.dumps(pair[0], ensure_ascii=pair[1]).encode("utf-8", "surrogatepass")
)
handmade = st.sampled_from(
    [
        b"",
        b" ",
        b"null",
        b"[" * 40 + b"]" * 40,
        b'{"oa": 1e999, "da": 1, "message": 1}',
        b'{"oa": "1", "da": "2", "message": "\\ud800"}',
        b'{"oa": "1", "da": "2", "message": "' + b"\\u0000" * 50 + b'"}',
        b'{"oa": "1", "da": "2", "message": 1' + b"0" * 5000 + b"}",
        b"\xef\xbb\xbf" + json.dumps(MESSAGE).encode(),
        json.dumps(MESSAGE).encode("utf-16"),
        b'{"oa": "1", "da": "2", "message": "m"} trailing',
        b'{"oa": "1", "da": "2", "message": "m"}' * 2,
    ]
)
bodies = (
    serialized
    | fixtures
    | handmade
    | st.binary(max_size=300)
    | st.binary(min_size=4000, max_size=5000)
)
content_types = (
    st.none()
    | st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-16",
            "application/vnd.webex+json",
            "text/json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "application/json; charset",
            "application/json;;;",
            ";",
            "",
            "*/*",
            "APPLICATION/JSON",
        ]
    )
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
)
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)
junk_headers = st.dictionaries(
    st.sampled_from(
        [
            "Authorization",
            "x-hub-signature",
            KEY_HEADER,
            "Content-Encoding",
            "Accept",
            "Accept-Charset",
            "Expect",
            "X-Forwarded-For",
            "Cookie",
        ]
    ),
    header_text | st.sampled_from(["Basic Og==", "Basic " + "A" * 500, "sha256=", "gzip"]),
    max_size=4,
)
sources = st.none() | st.text(
    st.characters(codec="utf-8", exclude_characters="/?#\x00"), min_size=1, max_size=70
)
methods = st.sampled_from(["POST"] * 6 + ["GET", "HEAD"])

PROPERTY = settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def small_app(redis_server):
    return create_app(load_settings(relay_env(redis_server.url, RELAY_MAX_BODY_BYTES="4096")))


@pytest.fixture
def guarded_app(redis_server):
    env = relay_env(
        redis_server.url,
        RELAY_MAX_BODY_BYTES="4096",
        RELAY_WEBEX_HUB_SECRET=SECRET,
        RELAY_INGEST_BASIC_AUTH=f"{USER}:{PASSWORD}",
        RELAY_INGEST_API_KEY_HEADER=KEY_HEADER,
        RELAY_INGEST_API_KEY=KEY,
    )
    return create_app(load_settings(env))


def send(app, method, source, body, content_type, headers):
    path = URL if source is None else f"{URL}/{quote(source, safe='')}"
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}
    return app.test_client().open(path, method=method, data=body, headers=headers)


def assert_answered(answer, method: str) -> None:
    event(f"{method} {answer.status_code}")  # the mix: pytest --hypothesis-show-statistics
    assert answer.status_code in ALLOWED, (answer.status_code, answer.data[:300])
    if method != "HEAD":
        assert answer.is_json and isinstance(answer.get_json(), dict), answer.data[:300]


@PROPERTY
@given(
    method=methods,
    source=sources,
    body=bodies,
    content_type=content_types,
    headers=junk_headers,
)
def test_any_request_is_answered_4xx_or_accepted(
    small_app, method, source, body, content_type, headers
):
    assert_answered(send(small_app, method, source, body, content_type, headers), method)


@PROPERTY
@given(
    body=bodies,
    content_type=content_types,
    headers=junk_headers,
    good=st.fixed_dictionaries(
        {"basic": st.booleans(), "key": st.booleans(), "signature": st.booleans()}
    ),
)
def test_any_request_to_a_guarded_endpoint_is_answered_4xx_or_accepted(
    guarded_app, body, content_type, headers, good
):
    headers = dict(headers)
    if good["basic"]:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    if good["key"]:
        headers[KEY_HEADER] = KEY
    if good["signature"]:
        headers["x-hub-signature"] = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = send(guarded_app, "POST", None, body, content_type, headers)
    assert_answered(answer, "POST")
    if not all(good.values()):
        assert answer.status_code in (401, 413)
    if answer.status_code == 401:
        assert answer.get_json() in ({"error": "unauthorized"}, {"error": "invalid_signature"})
