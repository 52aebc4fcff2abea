"""Structured http bodies and Slack blocks delivered to a local stand-in; JSON template bodies."""

from __future__ import annotations

import json

import pytest

from relay.actions import registry
from relay.actions.slack import check as slack_check
from relay.ops.dryrun import dry_run, format_text
from relay.rules import load_rules_text
from relay.samples import SAMPLE_INBOUND
from relay.worker.delivery import perform
from tests.actions.test_security_injection import (
    SETTINGS,
    destination_and_job,
    http,
    inbound,
    receipt,
    slack,
)


def test_a_structured_body_takes_an_explicit_content_type(sink):
    options = (
        "    headers: {Content-Type: application/vnd.api+json}\n"
        "    body: {data: {type: sms, attributes: {text: '{{ event.text }}'}}}\n"
    )
    destination, job = destination_and_job(http(sink.url(), options), inbound('say "hi"'))
    assert perform(destination, job, SETTINGS).ok
    (request,) = sink.requests
    assert request.header("Content-Type") == "application/vnd.api+json"
    assert request.json() == {"data": {"type": "sms", "attributes": {"text": 'say "hi"'}}}


def test_a_lone_surrogate_in_a_structured_body_is_sent_as_a_replacement_character(sink):
    destination, job = destination_and_job(
        http(sink.url(), "    body: {text: '{{ event.text }}'}\n"), inbound("a\ud800b")
    )
    assert perform(destination, job, SETTINGS).ok
    assert sink.requests[0].json() == {"text": "a\ufffdb"}


def test_a_json_template_body_that_renders_json_is_sent_as_before(sink):
    options = "    body: '{\"text\": {{ event.text | tojson }}}'\n"
    destination, job = destination_and_job(http(sink.url(), options), inbound('<"x">'))
    assert perform(destination, job, SETTINGS).ok
    (request,) = sink.requests
    assert request.header("Content-Type") == "application/json"
    assert request.json() == {"text": '<"x">'}


def test_a_plain_text_content_type_frees_a_json_looking_template(sink):
    options = (
        '    headers: {Content-Type: text/plain}\n    body: \'{"text": "{{ event.text }}"}\'\n'
    )
    destination, job = destination_and_job(http(sink.url(), options), inbound('a"b'))
    assert perform(destination, job, SETTINGS).ok
    assert sink.requests[0].body == b'{"text": "a"b"}'


@pytest.mark.parametrize(
    "media", ["application/json; charset=utf-8", "application/cloudevents+json"]
)
def test_a_json_content_type_requires_a_json_body(sink, media):
    options = f"    headers: {{Content-Type: '{media}'}}\n    body: 'SMS {{{{ event.text }}}}'\n"
    destination, job = destination_and_job(http(sink.url(), options), inbound("hi"))
    outcome = perform(destination, job, SETTINGS)
    assert (outcome.kind, sink.requests) == ("permanent", [])
    assert outcome.error.startswith(
        f"template error: rendered body is not valid JSON (Content-Type is {media}): "
        "Expecting value"
    )


def test_a_plain_text_template_body_is_not_held_to_json(sink):
    destination, job = destination_and_job(
        http(sink.url(), "    body: '[ALERT] {{ event.text }}'\n"), inbound('a"b')
    )
    assert perform(destination, job, SETTINGS).ok
    (request,) = sink.requests
    assert request.header("Content-Type") == "text/plain; charset=utf-8"


def test_structured_slack_blocks_are_posted_as_built(sink):
    options = """\
    text: "SMS {{ event.status }}"
    blocks:
      - type: header
        text: {type: plain_text, text: "{{ event.status }} {{ event.code }}"}
      - type: context
        elements:
          - {type: mrkdwn, text: "to {{ event.destination | mask }} <https://crm.example|open>"}
      - type: divider
"""
    destination, job = destination_and_job(slack(sink.url(), options), receipt("Failed"))
    assert slack_check(destination, SETTINGS) == []
    assert perform(destination, job, SETTINGS).ok
    assert sink.requests[0].json() == {
        "text": "SMS Failed",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Failed 7500"}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": "to ********xxxx <https://crm.example|open>"}
                ],
            },
            {"type": "divider"},
        ],
    }


def test_a_failing_block_leaf_is_a_permanent_template_error_naming_it(sink):
    options = (
        "    text: x\n    blocks: [{type: section, text: {type: mrkdwn, text: '{{ nope }}'}}]\n"
    )
    destination, job = destination_and_job(slack(sink.url(), options), receipt())
    outcome = perform(destination, job, SETTINGS)
    assert (outcome.kind, sink.requests) == ("permanent", [])
    assert outcome.error.startswith("template error: blocks[0].text.text: UndefinedError:")


def test_rules_test_shows_a_structured_body_as_indented_json():
    text = """version: 1
destinations:
  crm:
    type: http
    url: https://crm.example/x
    body: {from: "{{ event.sender | mask }}", text: "{{ event.text }}", n: 1}
routes: [{name: all, to: crm}]
"""
    reports = dry_run(load_rules_text(text, env={}), SAMPLE_INBOUND, SETTINGS)
    (delivery,) = reports[0]["deliveries"]
    assert json.loads(delivery["request"]["body"]) == {
        "from": "********0619",
        "text": "HELP please",
        "n": 1,
    }
    shown = format_text(reports)
    assert "Content-Type: application/json" in shown
    assert '        "text": "HELP please",' in shown


def test_rules_test_shows_why_a_json_template_body_would_fail():
    text = """version: 1
destinations:
  crm:
    type: http
    url: https://crm.example/x
    body: '{"text": "{{ event.text }}"}'
routes: [{name: all, to: crm}]
"""
    payload = {**SAMPLE_INBOUND, "message": 'say "hi"'}
    reports = dry_run(load_rules_text(text, env={}), payload, SETTINGS)
    (delivery,) = reports[0]["deliveries"]
    assert delivery["error"].startswith(
        "template error: rendered body is not valid JSON (the template is written as JSON)"
    )


def test_prepare_of_every_string_form_still_works():
    for body, expected in (
        ("event", "application/json"),
        ("raw", "application/json"),
        ("'{{ event.text | tojson }}'", "application/json"),
        ("'SMS {{ event.text }}'", "text/plain; charset=utf-8"),
    ):
        destination, job = destination_and_job(
            http("https://crm.example/x", f"    body: {body}\n"), inbound("hi")
        )
        assert registry.prepare(destination, job, SETTINGS)["content_type"] == expected
