"""Rules templates: filters, strict undefined names, the sandbox, event text as data."""

from __future__ import annotations

import pytest
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from relay.errors import RelayError
from relay.rules.templates import (
    Template,
    TemplateError,
    compile_template,
    is_one_tojson,
    mask,
    outputs_outside_tojson,
    render,
    tojson,
)

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
        ("{{ '<b>' | tojson }}", '"\\u003cb\\u003e"'),  # HTML-safe, as Jinja's own
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


def test_tojson_is_html_safe_like_jinjas_own():
    value = {"t": "</script><img src=x onerror='a&b'>", "n": [1, None]}
    assert tojson(value) == htmlsafe_json_dumps(value)
    assert isinstance(tojson(value), Markup)


def _render_as(mode: str, source: str, text: str) -> str:
    return compile_template(source, mode).render({"text": text, "n": [text]}, "r", "d")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ event.text }}", "&lt;!channel&gt; &amp; \"q\" 'a'"),
        ("<!here> {{ event.text }}", "<!here> &lt;!channel&gt; &amp; \"q\" 'a'"),  # own text kept
        ("{{ event.text | safe }}", "<!channel> & \"q\" 'a'"),
        ("{{ event.text | e }}", "&lt;!channel&gt; &amp; \"q\" 'a'"),  # Slack's escape here
        ("{{ event.text ~ '!' }}", "&lt;!channel&gt; &amp; \"q\" 'a'!"),
        ("{{ event.text | upper }}", "&lt;!CHANNEL&gt; &amp; \"Q\" 'A'"),
        ("{{ event.n | tojson }}", '["&lt;!channel&gt; &amp; \\"q\\" \'a\'"]'),
        ("{{ event.text | mask }}", "**************** 'a'"),
    ],
)
def test_slack_templates_escape_what_they_interpolate(source, expected):
    assert _render_as("slack", source, "<!channel> & \"q\" 'a'") == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<p>{{ event.text }}</p>", "<p>&lt;/p&gt;&lt;a href=&#34;x&#34;&gt; &amp; &#39;</p>"),
        ("<p>{{ event.text | safe }}</p>", '<p></p><a href="x"> & \'</p>'),
        (
            "<pre>{{ event.n | tojson }}</pre>",
            '<pre>["\\u003c/p\\u003e\\u003ca href=\\"x\\"\\u003e \\u0026 \\u0027"]</pre>',
        ),
    ],
)
def test_html_templates_autoescape(source, expected):
    assert _render_as("html", source, '</p><a href="x"> & \'') == expected


def test_text_templates_escape_nothing():
    assert _render_as("text", "<{{ event.text }}>", '<!channel> & "q"') == '<<!channel> & "q">'


def test_the_sandbox_holds_in_every_mode():
    for mode in ("text", "html", "slack"):
        with pytest.raises(TemplateError):
            compile_template("{{ ''.__class__.__mro__[1].__subclasses__() }}", mode).render(
                {}, "r", "d"
            )


@pytest.mark.parametrize(
    ("source", "outside", "one"),
    [
        ("plain", False, False),
        ('{"a": {{ event.text | tojson }}}', False, False),
        ("{{ event | tojson }}", False, True),
        ("{{ event | tojson | safe }}", False, True),
        ("{{ event.callback | tojson(indent=2) }}", False, True),
        (" {{ event | tojson }}", False, False),
        ('{"a": "{{ event.text }}"}', True, False),
        ("{% if event.text %}{{ event.text | upper }}{% endif %}", True, False),
        ("{{ event.text | tojson | upper }}", True, False),
    ],
)
def test_what_a_template_puts_out_raw(source, outside, one):
    template = compile_template(source)
    assert (outputs_outside_tojson(template), is_one_tojson(template)) == (outside, one)
