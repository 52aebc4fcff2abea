"""Each render of a template has a budget (relay.rules.sandbox): past it, one clear
TemplateBudgetError, at once, whatever the template tried."""

from __future__ import annotations

import pytest

from relay.errors import TemplateBudgetError, TemplateError
from relay.rules.templates import compile_template

EVENT = {"kind": "inbound_message", "text": "hello", "code": 7102}
STEPS = "template budget spent: more than 100,000 steps (loop passes and calls)"
VALUE = "template budget spent: a value of more than 1,000,000 characters"
WIDTH = "template budget spent: a field width of more than 1,000,000 characters"

SPENDERS = [
    # (template, the error)
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", STEPS),
    (
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
        "{{ m(40) }}",
        STEPS,
    ),
    ("{{ 'x' * 1000000000 }}", VALUE),
    ("{{ ['xxxxxxxxxx'] * 1000000 }}", VALUE),
    ("{% set b = 'x' * 900000 %}{{ [b, b] }}", VALUE),
    ("{% set b = 'x' * 900000 %}{{ b ~ b }}", VALUE),
    ("{% set b = 'x' * 600000 %}{{ [b, b]|join }}", VALUE),
    (
        "{% set ns = namespace(x='ab') %}{% for i in range(60) %}"
        "{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        VALUE,
    ),
    (
        "{% set ns = namespace(x='aa') %}{% for i in range(60) %}"
        "{% set ns.x = ns.x|replace('a', 'aa') %}{% endfor %}",
        VALUE,
    ),
    ("{{ 'a'|center(1000000000) }}", VALUE),
    ("{{ 'a'.ljust(1000000000) }}", VALUE),
    ("{{ '{:>1000000000}'.format(1) }}", WIDTH),
    ("{{ '%1000000000d' % 1 }}", WIDTH),
    ("{{ 7 ** 100000 }}", "template budget spent: a number of more than 10,000 bits"),
    ("{{ lipsum(5, max=1000000000) }}", "template budget spent: lipsum makes at most 1,000"),
    (
        "{% for i in range(6000) %}" + "x" * 200 + "{% endfor %}",
        "template budget spent: more than 1,000,000 characters put out",
    ),
    (
        "{% set b = 'x' * 900000 %}{% set y %}{% for i in range(100) %}{{ b }}{% endfor %}"
        "{% endset %}",
        "template budget spent: more than 10,000,000 characters made",
    ),
]


@pytest.mark.parametrize(("source", "message"), SPENDERS)
def test_a_render_past_its_budget_stops_with_one_clear_error(source, message):
    template = compile_template(source)
    with pytest.raises(TemplateBudgetError) as caught:
        template.render(EVENT, "route", "destination")
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, TemplateError)


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("{% for i in range(1000) %}{% for j in range(90) %}{% endfor %}{% endfor %}ok", "ok"),
        ("{{ ('x' * 999999)|length }}", "999999"),
        ("{{ '%5s|%-3d' % ('a', 7) }}", "    a|7  "),
        ("{{ '{:>4}'.format(event.code) }}", "7102"),
        ("{{ 2 ** 64 }}", str(2**64)),
        ("{{ event.text|center(9) }}|{{ event.text|indent(2, first=true) }}", "  hello  |  hello"),
        ("{{ lipsum(1, html=false, min=3, max=4).split()|length }}", "3"),
    ],
)
def test_what_stays_within_the_budget_renders_as_before(source, text):
    assert compile_template(source).render(EVENT, "route", "destination") == text


def test_each_render_has_a_budget_of_its_own():
    within = compile_template("{% for i in range(60000) %}{% endfor %}done")
    for _ in range(3):  # 180,000 steps in all, 60,000 a render
        assert within.render(EVENT, "route", "destination") == "done"
    past = compile_template(
        "{% for i in range(2) %}{% for j in range(60000) %}{% endfor %}{% endfor %}"
    )
    with pytest.raises(TemplateBudgetError):
        past.render(EVENT, "route", "destination")
