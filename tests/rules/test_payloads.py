"""Structured payloads: an http body or Slack blocks written as YAML, each string a template."""

from __future__ import annotations

import json

import pytest

from relay.errors import RulesError
from relay.rules import (
    HttpDestination,
    SlackDestination,
    Structured,
    Template,
    TemplateError,
    load_rules_text,
)
from relay.rules.payloads import is_json_media_type, json_required, looks_like_json

EVENT = {"kind": "delivery_receipt", "status": "Failed", "code": "7102", "callback": {"a": [1]}}

HEAD = "version: 1\ndestinations:\n  x:\n"
TAIL = "routes: [{name: all, to: x}]\n"


def destination(options: str):
    return load_rules_text(HEAD + options + TAIL, env={"TEAM": "ops"}).destinations["x"]


def problems(options: str) -> list[str]:
    with pytest.raises(RulesError) as raised:
        load_rules_text(HEAD + options + TAIL, "rules.yaml", env={})
    return raised.value.errors


def http(body: str) -> HttpDestination:
    found = destination(f"    type: http\n    url: https://crm.example/x\n{body}")
    assert isinstance(found, HttpDestination)
    return found


def test_a_mapping_body_is_structured_and_renders_to_json_data():
    crm = http(
        "    body:\n"
        "      status: '{{ event.status }}'\n"
        "      team: ${TEAM}\n"
        "      nested: {codes: ['{{ event.code }}', 7102], ok: false, none: null, ratio: 0.5}\n"
        "      code: '{{ event.code | int | tojson }}'\n"
        "      callback: '{{ event.callback | tojson }}'\n"
        "      literal: 'text with no markers'\n"
    )
    assert isinstance(crm.body, Structured)
    assert crm.body.render(EVENT, "all", "x") == {
        "status": "Failed",
        "team": "ops",
        "nested": {"codes": ["7102", 7102], "ok": False, "none": None, "ratio": 0.5},
        "code": 7102,
        "callback": {"a": [1]},
        "literal": "text with no markers",
    }


def test_a_list_body_is_structured_too():
    crm = http("    body: ['{{ route }}', {k: '{{ destination }}'}]\n")
    assert crm.body.render(EVENT, "all", "x") == ["all", {"k": "x"}]


def test_the_string_forms_are_unchanged():
    assert http("    body: event\n").body == "event"
    assert http("    body: raw\n").body == "raw"
    body = http("    body: 'SMS {{ event.status }}'\n").body
    assert isinstance(body, Template) and body.render(EVENT, "r", "d") == "SMS Failed"


def test_a_failing_leaf_is_a_template_error_naming_it():
    crm = http("    body: {a: [ok, '{{ event.nope }}']}\n")
    with pytest.raises(TemplateError) as raised:
        crm.body.render(EVENT, "all", "x")
    assert str(raised.value).startswith("body.a[1]: UndefinedError:")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            "    type: http\n    url: https://a.example\n    body:\n      a: ok\n      b: '{{ x'\n",
            "rules.yaml:8: destinations.x.body.b: template syntax error: unexpected end of "
            "template, expected 'end of print statement'.",
        ),
        (
            "    type: http\n    url: https://a.example\n    body:\n      a:\n        - .nan\n",
            "rules.yaml:8: destinations.x.body.a[0]: nan is not a JSON number",
        ),
        (
            "    type: http\n    url: https://a.example\n    body: 3\n",
            "rules.yaml:6: destinations.x.body: expected event, raw, a template string, or a "
            "mapping or list (structured)",
        ),
        (
            "    type: slack\n    webhook_url: https://h.example/x\n    text: t\n"
            "    blocks: {type: section}\n",
            "rules.yaml:7: destinations.x.blocks: expected a list of blocks (each a mapping with "
            "a type) or a template string",
        ),
        (
            "    type: slack\n    webhook_url: https://h.example/x\n    text: t\n"
            "    blocks:\n      - {type: divider}\n      - text: {type: mrkdwn, text: hi}\n",
            "rules.yaml:9: destinations.x.blocks[1]: a block needs a type (section, context, "
            "divider …)",
        ),
        (
            "    type: slack\n    webhook_url: https://h.example/x\n    text: t\n"
            "    blocks: [divider]\n",
            "rules.yaml:7: destinations.x.blocks[0]: expected a block: a mapping with a type",
        ),
    ],
)
def test_problems_in_a_structured_payload_are_reported_at_their_line(options, expected):
    assert expected in problems(options)


def test_a_template_syntax_error_in_a_block_scalar_leaf_points_at_its_own_line():
    options = (
        "    type: http\n    url: https://a.example\n    body:\n      text: |\n"
        "        line one\n        {{ oops }\n"
    )
    (problem,) = problems(options)
    assert problem.startswith("rules.yaml:9: destinations.x.body.text: template syntax error")


def test_slack_blocks_as_a_yaml_list_are_slack_escaped_templates():
    ops = destination(
        "    type: slack\n    webhook_url: https://h.example/x\n    text: '{{ event.status }}'\n"
        "    blocks:\n"
        "      - type: section\n"
        "        text:\n"
        "          type: mrkdwn\n"
        "          text: '*{{ event.status }}* <https://x.example|{{ route }}>'\n"
    )
    assert isinstance(ops, SlackDestination) and isinstance(ops.blocks, Structured)
    event = {**EVENT, "status": "<!channel>"}
    assert ops.blocks.render(event, "a&b", "x") == [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*&lt;!channel&gt;* <https://x.example|a&amp;b>"},
        }
    ]
    assert ops.text.render(event, "r", "x") == "&lt;!channel&gt;"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{"a": 1}', True),
        ('  {\n  "a": "{{ x }}"}', True),
        ("{}", True),
        ('[{"a": 1}]', True),
        ('["a"]', True),
        ("[[1]]", True),
        ("[]", True),
        ("{{ event | tojson }}", False),
        ("{% if x %}{}{% endif %}", False),
        ("[{{ event.status }}] failed", False),
        ("[ALERT] {{ event.status }}", False),
        ("SMS {{ event.status }}", False),
    ],
)
def test_looks_like_json(source, expected):
    assert looks_like_json(source) is expected


@pytest.mark.parametrize(
    ("media", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/vnd.api+json", True),
        ("text/json", True),
        ("application/x-ndjson", False),
        ("text/plain", False),
    ],
)
def test_json_media_types(media, expected):
    assert is_json_media_type(media) is expected


def test_an_explicit_content_type_decides_whether_json_is_required():
    assert json_required('{"a": "{{ x }}"}', "text/plain") is None
    assert json_required("{{ x }}", "application/json") == "Content-Type is application/json"
    assert json_required('{"a": "{{ x }}"}', None) == "the template is written as JSON"
    assert json_required("SMS {{ x }}", None) is None


def test_structured_payloads_are_frozen_and_compare_by_content():
    one, two = (http("    body: {a: ['{{ route }}']}\n").body for _ in range(2))
    assert one == two and hash(json.dumps(one.render(EVENT, "r", "d"))) is not None
    with pytest.raises(TypeError):
        one.tree["a"] = "changed"  # type: ignore[index]
