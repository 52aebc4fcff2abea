"""Rules templates: filters, strict undefined names, the sandbox, event text as data."""

from __future__ import annotations

import pytest

from relay.errors import RelayError
from relay.rules.templates import Template, TemplateError, compile_template, mask, render, tojson

EVENT = {
    "id": "01J",
    "kind": "inbound_message",
    "sender": "447700900123",
    "text": "{{ 7*7 }} {% raw %}",
    "keyword": "HELP",
    "callback": {"b": 2, "a": "ü"},
}


def _render(source: str, event: dict | None = None) -> str:
    return render(compile_template(source), EVENT if event is None else event, "help", "reply")


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("447700900123", "********0123"),
        ("1234", "1234"),
        ("12", "12"),
        ("", ""),
        (None, ""),
        (447700900123, "********0123"),
    ],
)
def test_mask_keeps_the_last_four_characters(value, masked):
    assert mask(value) == masked


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ event.sender | mask }}", "********0123"),
        ("{{ event.callback | tojson }}", '{"b": 2, "a": "ü"}'),
        ("{{ event.callback | tojson(indent=2) }}", '{\n  "b": 2,\n  "a": "ü"\n}'),
        ("{{ '<b>' | tojson }}", '"<b>"'),
        ("{{ route }} → {{ destination }}", "help → reply"),
        ("<{{ event.keyword }}>", "<HELP>"),  # no autoescape
        ("{{ event.get('status', 'none') }}", "none"),
        ("plain text", "plain text"),
    ],
)
def test_template_renders_with_event_route_destination_and_filters(source, expected):
    assert _render(source) == expected


def test_event_text_is_rendered_as_data_never_evaluated():
    assert _render("You said: {{ event.text }}") == "You said: {{ 7*7 }} {% raw %}"


@pytest.mark.parametrize(
    "source", ["{{ event.status }}", "{{ nothing }}", "{{ event.sender | mask }} {{ x.y }}"]
)
def test_undefined_name_is_a_template_error(source):
    with pytest.raises(TemplateError, match="UndefinedError"):
        _render(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ event.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% set _ = event.clear() %}{{ event }}",
        "{{ event.callback.update({'a': 1}) }}",
    ],
)
def test_sandbox_blocks_escapes_and_mutation(source):
    event = {"callback": {"a": "x"}}
    with pytest.raises(TemplateError, match="SecurityError"):
        _render(source, event)
    assert event == {"callback": {"a": "x"}}


def test_template_error_is_a_relay_error():
    assert issubclass(TemplateError, RelayError)


def test_runtime_failure_is_a_template_error():
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        _render("{{ 1 / 0 }}")


@pytest.mark.parametrize(
    ("source", "lineno"),
    [("{{ event.code }", 1), ("ok\nok\n{% if x %}", 3), ("{{ x | nosuchfilter }}", 1)],
)
def test_syntax_error_is_raised_at_compile_time_with_its_line(source, lineno):
    with pytest.raises(TemplateError) as caught:
        compile_template(source)
    assert caught.value.lineno == lineno


def test_text_without_markers_is_kept_as_a_constant():
    template = compile_template("ACME: reply STOP to opt out.")
    assert template == Template("ACME: reply STOP to opt out.")
    assert template.render({}, "r", "d") == "ACME: reply STOP to opt out."


def test_tojson_keeps_key_order_and_non_ascii():
    assert tojson({"z": "é", "a": [1, None]}) == '{"z": "é", "a": [1, null]}'
