"""Rules templates cannot escape Jinja's sandbox, and payload text is never evaluated.

Every classic server-side template injection must end as ``relay.rules.TemplateError``
(at load or at render) — which a delivery turns into a permanent failure — never as
output that reveals Python internals, and never as code run in the worker.
"""

from __future__ import annotations

import json

import pytest

from relay.parsing import build_events
from relay.rules import TemplateError
from relay.rules.templates import compile_template
from relay.worker.delivery import perform
from tests.worker.test_delivery import SETTINGS, job_for, rules


def inbound(text: str) -> dict:
    payload = {"oa": "447700900123", "da": "12345", "message": text, "tid": "t-1"}
    (event,), _ = build_events(payload, "default", frozenset())
    return event


def render(source: str, event: dict | None = None) -> str:
    """Compile and render ``source``; TemplateError from either step."""
    return compile_template(source).render(event or inbound("hi"), "route", "dest")


ESCAPES = [
    # attribute walks to object / subclasses / globals
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ event.__class__ }}",
    "{{ event['__class__'] }}",
    "{{ event.get.__self__ }}",
    "{{ event.__init__.__globals__ }}",
    "{{ (1).real.__class__ }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{{ c }}{% endfor %}",
    # Jinja's own globals as stepping stones
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ lipsum|attr('__globals__') }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ cycler('a').next.__func__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ joiner().__call__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ namespace(a=1).__class__ }}",
    "{% set ns = namespace(a=event) %}{{ ns.a.__class__ }}",
    "{{ range.__globals__ }}",
    # the attr filter and escaped names
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ event|attr('__class__') }}",
    # format-string tricks
    "{{ '{0.__class__}'.format(event) }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{x.__class__}'.format_map({'x': event}) }}",
    "{{ '{0.get.__globals__}'.format(event) }}",
    "{{ ''.format.__self__ }}",
    # the template's own context
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.keys() }}",
    "{{ self.__dict__ }}",
    "{{ self.__init__ }}",
    # names a Flask template would have; here they do not exist
    "{{ request }}",
    "{{ request.environ }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ url_for.__globals__ }}",
    "{{ get_flashed_messages.__globals__ }}",
    "{{ g }}",
    "{{ session }}",
    "{{ os }}",
    "{{ __builtins__ }}",
    "{{ import }}",
    # reading files, changing the event, exhausting memory
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{% import '/etc/passwd' as x %}",
    "{{ event.update({'id': 'forged'}) }}",
    "{{ event.raw.clear() }}",
    "{{ event.pop('id') }}",
    "{{ range(10**9)|list }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_template_errors(source):
    with pytest.raises(TemplateError):
        render(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ event|map(attribute='__class__')|list }}",
        "{{ [event|attr('__class__')] }}",
        "{{ lipsum }}",
        "{{ cycler }}{{ joiner }}{{ namespace }}{{ self }}",
    ],
)
def test_what_renders_reveals_nothing_usable(source):
    """Jinja lets these through as inert values: unsafe attributes come out Undefined."""
    text = render(source)
    assert "__" not in text and "globals" not in text and "subclasses" not in text


def test_a_mutation_attempt_leaves_the_event_unchanged():
    event = inbound("hi")
    before = dict(event)
    with pytest.raises(TemplateError):
        render("{{ event.update({'id': 'forged'}) }}", event)
    assert event == before


@pytest.mark.parametrize(
    "text",
    [
        "{{ 7*7 }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% for x in range(10**9) %}{% endfor %}",
        "{# comment #}",
        "{0.__class__}",
        "%(secret)s",
    ],
)
def test_payload_text_is_data_never_evaluated(text):
    event = inbound(text)
    assert render("{{ event.text }}", event) == text
    assert render("{{ event.raw.message }}", event) == text
    shown = render("Got: {{ event.text|tojson }}", event)
    assert shown.startswith("Got: ") and json.loads(shown[len("Got: ") :]) == text


def test_payload_text_used_as_a_format_string_cannot_reach_internals():
    event = inbound("{0.__class__.__init__.__globals__}")
    with pytest.raises(TemplateError):
        render("{{ event.text.format(event) }}", event)


def test_an_escape_in_a_delivery_template_is_a_permanent_failure_and_sends_nothing(sink):
    body = "\"{{ cycler.__init__.__globals__.os.popen('id').read() }}\""
    destination, job = job_for(rules(sink.url(), f"body: {body}"))
    outcome = perform(destination, job, SETTINGS)
    assert outcome.kind == "permanent"
    assert outcome.error.startswith("template error:")
    assert sink.requests == []


def test_payload_braces_travel_verbatim_in_a_delivery(sink):
    destination, job = job_for(rules(sink.url(), 'body: "{{ event.text }}"'))
    job["event"] = {**job["event"], "text": "{{ 7*7 }} {% raw %}"}
    assert perform(destination, job, SETTINGS).ok
    (request,) = sink.requests
    assert request.body == b"{{ 7*7 }} {% raw %}"
