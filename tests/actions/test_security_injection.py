"""Event data cannot inject into structured output (JSON bodies, Slack, HTML email).

Each test is an attack from the security audit, replayed through the real delivery path
(``perform``: render, then send to a local stand-in) or the action's ``prepare``:

- an http body: a crafted ``callbackData`` adding a key to a signed JSON body;
- Slack ``blocks``: a crafted ``deliveryStatus`` adding a block, or a ``"`` breaking them;
- Slack text: ``<!channel>`` and ``<https://evil|Reset your password>`` from an SMS;
- HTML email: ``</pre><a href=…>`` in the README's own example;
- ``tojson``: not HTML-safe.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.actions import registry
from relay.parsing import build_events
from relay.rules import load_rules_text
from relay.samples import SAMPLE_RECEIPT
from relay.settings import load_settings
from relay.worker.delivery import perform

SETTINGS = load_settings({"RELAY_SMTP_URL": "smtp://127.0.0.1:2525"})

#: callbackData ``{"campaign": <this>}`` turned a one-key body into three keys
KEY_INJECTION = 'spring","admin":true,"x":"'

#: a deliveryStatus that added an attacker's image block to a blocks template
BLOCK_INJECTION = (
    'Failed"}},{"type":"image","image_url":"https://evil.example/x.png","alt_text":"x"},'
    '{"type":"section","text":{"type":"mrkdwn","text":"'
)


def receipt(status: str = "Failed", callback: object = None) -> dict:
    """A normalized delivery receipt with ``deliveryStatus`` and ``callbackData`` as given."""
    payload = json.loads(json.dumps(SAMPLE_RECEIPT))
    notification = payload["deliveryInfoNotification"]
    notification["deliveryInfo"]["deliveryStatus"] = status
    notification["callbackData"] = json.dumps(callback if callback is not None else {})
    (event,), _ = build_events(payload, "default", frozenset())
    return event


def inbound(text: str) -> dict:
    payload = {"oa": "447700900123", "da": "12345", "message": text, "tid": "t-1"}
    (event,), _ = build_events(payload, "default", frozenset())
    return event


def destination_and_job(destination: str, event: dict):
    """The destination ``x`` defined by ``destination`` (YAML under it) and a job for it."""
    text = f"version: 1\ndestinations:\n  x:\n{destination}\nroutes: [{{name: all, to: x}}]\n"
    ruleset = load_rules_text(text, env={})
    job = {"event": event, "route": "all", "destination": "x", "delivery_id": "e1:x"}
    return ruleset.destinations["x"], job


def http(url: str, rest: str) -> str:
    return f"    type: http\n    url: {url}\n{rest}"


def slack(url: str, rest: str) -> str:
    return f"    type: slack\n    webhook_url: {url}\n{rest}"


# -- http bodies --------------------------------------------------------------------------


STRUCTURED_BODY = """\
    sign: {secret: whsec_c2VjcmV0}
    body:
      campaign: "{{ event.callback.campaign }}"
      status: "{{ event.status }}"
      attempt: 1
      tags: ["sms", "{{ route }}"]
"""


def test_a_structured_body_keeps_its_keys_whatever_callbackdata_says(sink):
    destination, job = destination_and_job(
        http(sink.url(), STRUCTURED_BODY), receipt(callback={"campaign": KEY_INJECTION})
    )
    assert perform(destination, job, SETTINGS).ok
    (request,) = sink.requests
    assert request.header("Content-Type") == "application/json"
    assert request.json() == {
        "campaign": KEY_INJECTION,
        "status": "Failed",
        "attempt": 1,
        "tags": ["sms", "all"],
    }


def test_a_string_template_json_body_that_does_not_parse_is_permanent_and_not_sent(sink):
    body = """    headers: {Content-Type: application/json}
    body: '{"campaign": "{{ event.callback.campaign }}"}'
"""
    destination, job = destination_and_job(
        http(sink.url(), body), receipt(callback={"campaign": 'spring "quoted"'})
    )
    outcome = perform(destination, job, SETTINGS)
    assert outcome.kind == "permanent"
    assert "rendered body is not valid JSON" in (outcome.error or "")
    assert sink.requests == []


def test_a_template_written_as_a_json_object_must_render_json_without_a_header(sink):
    destination, job = destination_and_job(
        http(sink.url(), '    body: \'{"campaign": "{{ event.callback.campaign }}"}\'\n'),
        receipt(callback={"campaign": 'a"b'}),
    )
    outcome = perform(destination, job, SETTINGS)
    assert (outcome.kind, sink.requests) == ("permanent", [])
    assert "rendered body is not valid JSON" in (outcome.error or "")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    campaign=st.text(),
    status=st.text(min_size=1).filter(lambda s: s.strip() and "\x00" not in s),
)
def test_property_structured_bodies_carry_any_event_text_as_one_value(campaign, status):
    destination, job = destination_and_job(
        http("https://crm.example/x", STRUCTURED_BODY),
        receipt(status=status, callback={"campaign": campaign}),
    )
    prepared = registry.prepare(destination, job, SETTINGS)
    body = json.loads(prepared["body"])
    assert list(body) == ["campaign", "status", "attempt", "tags"]
    assert body["campaign"] == campaign.encode("utf-8", "replace").decode("utf-8")
    assert body["attempt"] == 1 and body["tags"] == ["sms", "all"]


# -- Slack -------------------------------------------------------------------------------


STRUCTURED_BLOCKS = """\
    text: "SMS {{ event.status }}"
    blocks:
      - type: section
        text: {type: mrkdwn, text: "*{{ event.status }}* {{ event.code }}"}
"""


@pytest.mark.parametrize("status", [BLOCK_INJECTION, 'Fail"ed', "<!channel>"])
def test_structured_slack_blocks_cannot_gain_a_block_or_break(sink, status):
    destination, job = destination_and_job(slack(sink.url(), STRUCTURED_BLOCKS), receipt(status))
    assert perform(destination, job, SETTINGS).ok
    (request,) = sink.requests
    blocks = request.json()["blocks"]
    assert [block["type"] for block in blocks] == ["section"]
    shown = status.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert blocks[0]["text"]["text"] == f"*{shown}* 7500"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("<!channel> urgent", "&lt;!channel&gt; urgent"),
        (
            "<https://evil.example|Reset your password>",
            "&lt;https://evil.example|Reset your password&gt;",
        ),
        ("<@U024BE7LH> & co", "&lt;@U024BE7LH&gt; &amp; co"),
    ],
)
def test_slack_text_escapes_mrkdwn_control_characters_from_the_event(text, shown):
    destination, job = destination_and_job(
        slack("https://hooks.slack.test/x", '    text: "From SMS: {{ event.text }}"\n'),
        inbound(text),
    )
    prepared = registry.prepare(destination, job, SETTINGS)
    assert prepared["payload"]["text"] == f"From SMS: {shown}"


def test_a_string_blocks_template_escapes_interpolated_values_too():
    blocks = (
        "    text: x\n"
        '    blocks: \'[{"type": "section", "text": {"type": "mrkdwn", '
        '"text": {{ event.text | tojson }}}}, {"type": "context", "elements": '
        '[{"type": "mrkdwn", "text": "{{ event.text }}"}]}]\'\n'
    )
    destination, job = destination_and_job(
        slack("https://hooks.slack.test/x", blocks), inbound("<!here>")
    )
    prepared = registry.prepare(destination, job, SETTINGS)
    section, context = prepared["payload"]["blocks"]
    assert section["text"]["text"] == "&lt;!here&gt;"
    assert context["elements"][0]["text"] == "&lt;!here&gt;"


def test_a_template_can_mark_a_value_safe_for_slack():
    text = '    text: "<{{ event.callback.url | safe }}|Open> {{ event.callback.url }}"\n'
    url = "https://crm.example/t?id=1&x=<2>"
    destination, job = destination_and_job(
        slack("https://hooks.slack.test/x", text), receipt(callback={"url": url})
    )
    prepared = registry.prepare(destination, job, SETTINGS)
    escaped = "https://crm.example/t?id=1&amp;x=&lt;2&gt;"
    assert prepared["payload"]["text"] == f"<{url}|Open> {escaped}"


# -- HTML email ---------------------------------------------------------------------------


ATTACK = '</pre><a href="https://evil.example/login">Reset your password</a><pre>'


@pytest.mark.parametrize(
    "html",
    [
        '"<pre>{{ event | tojson(indent=2) }}</pre>"',  # the README's example
        '"<p>{{ event.text }}</p>"',
        "\"<p title='{{ event.text }}'>{{ event.raw.message }}</p>\"",
    ],
)
def test_html_email_parts_escape_event_data(html):
    destination, job = destination_and_job(
        f"    type: email\n    to: a@example.com\n    subject: s\n    body: b\n    html: {html}\n",
        inbound(ATTACK),
    )
    prepared = registry.prepare(destination, job, SETTINGS)
    assert "<a " not in prepared["html"] and "</pre><" not in prepared["html"]


def test_the_plain_text_email_body_is_not_escaped():
    destination, job = destination_and_job(
        "    type: email\n    to: a@example.com\n    subject: '{{ event.text }}'\n"
        "    body: '{{ event.text }}'\n    html: '<p>{{ event.text }}</p>'\n",
        inbound("Tom & Jerry <3"),
    )
    prepared = registry.prepare(destination, job, SETTINGS)
    assert prepared["subject"] == prepared["body"] == "Tom & Jerry <3"
    assert prepared["html"] == "<p>Tom &amp; Jerry &lt;3</p>"


# -- tojson -------------------------------------------------------------------------------


def test_tojson_is_html_safe_in_every_template():
    destination, job = destination_and_job(
        http("https://crm.example/x", "    body: '{{ event.text | tojson }}'\n"),
        inbound("</script><b>'&'"),
    )
    body = registry.prepare(destination, job, SETTINGS)["body"]
    assert body == '"\\u003c/script\\u003e\\u003cb\\u003e\\u0027\\u0026\\u0027"'
    assert json.loads(body) == "</script><b>'&'"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text())
def test_property_slack_and_html_templates_never_pass_markup_through(text):
    """Whatever the callbackData says, Slack text and HTML parts carry it inert and whole."""
    event = receipt(callback={"note": text})
    hook, job = destination_and_job(
        slack("https://hooks.slack.test/x", '    text: "[{{ event.callback.note }}]"\n'), event
    )
    shown = registry.prepare(hook, job, SETTINGS)["payload"]["text"]
    inner = shown[1:-1]
    assert "<" not in inner and ">" not in inner
    fit = text.encode("utf-8", "replace").decode("utf-8")
    unescaped = inner.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert unescaped == fit
    mail, job = destination_and_job(
        "    type: email\n    to: a@example.com\n    subject: s\n    body: b\n"
        "    html: '<p>{{ event.callback.note }}</p><pre>{{ event.callback | tojson }}</pre>'\n",
        event,
    )
    html = registry.prepare(mail, job, SETTINGS)["html"]
    assert html.count("<") == 4 and html.count(">") == 4
