"""Jinja2 templates in rules: compiled at load time, rendered per delivery.

Templates run in Jinja's immutable sandbox (no ``__class__``-style escapes, no mutating the
event for the next destination) with :class:`jinja2.StrictUndefined`, so a name that does not
exist is an error rather than an empty string. Each render has a budget of steps, sizes and
CPU (:mod:`relay.rules.sandbox`); past it the render is a :class:`TemplateBudgetError`.

A template sees ``event`` (the event dict, README: Events), ``route`` (route name, or ``default``),
``destination`` (destination name) and ``failure`` (``None``, except in a delivery to a
fallback: ``{destination, attempts, last_error, delivery_id}`` of the delivery that was
dead-lettered), and two filters besides Jinja's own:

- ``mask``: keep the last 4 characters, star the rest (``447700900123`` → ``********0123``);
  ``None`` becomes ``""``.
- ``tojson``: ``json.dumps`` keeping non-ASCII text as is and keys in their order, made
  HTML-safe as Jinja's own is (``<``, ``>``, ``&`` and ``'`` written as ``\\u003c`` …);
  ``indent=`` is passed through. Its output counts as safe (never escaped again).

Each template has a :data:`Mode`, the escaping of what ``{{ … }}`` puts out (the template's
own text is never escaped; ``|safe`` marks a value as already fit):

- ``text``: nothing escaped (http bodies and headers, email subject and body, SMS, logs);
- ``html``: Jinja's autoescape (``&``, ``<``, ``>``, ``"``, ``'``), for HTML email parts;
- ``slack``: Slack's control characters ``&``, ``<`` and ``>`` as ``&amp;``, ``&lt;`` and
  ``&gt;``, so ``<!channel>`` in an SMS reaches Slack as text, not a mention. ``tojson``
  escapes the strings inside the value the same way, so a ``blocks`` template's JSON
  carries them escaped too; ``|e`` is Slack's escape here.

Text that arrives in the event (an SMS saying ``{{ 7*7 }}``) is data: it is never evaluated.
What a template puts out is valid Unicode: a lone surrogate becomes U+FFFD.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jinja2
from jinja2 import meta, nodes
from markupsafe import Markup

from relay.errors import BudgetSpentError, TemplateBudgetError, TemplateError
from relay.rules.sandbox import BudgetedSandbox
from relay.rules.sandbox import render as render_within_budget
from relay.text import valid_text

Mode = Literal["text", "html", "slack"]
MODES: tuple[Mode, ...] = ("text", "html", "slack")

_MARKERS = ("{{", "{%", "{#")
_HTML_SAFE_JSON = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"}
_SLACK_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def mask(value: Any) -> str:
    """All but the last 4 characters of ``value`` as ``*``; ``None`` → ``""``."""
    if value is None:
        return ""
    text = str(value)
    return "*" * max(len(text) - 4, 0) + text[-4:]


def tojson(value: Any, indent: int | None = None) -> Markup:
    """``value`` as HTML-safe JSON text, non-ASCII kept, keys in their order."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=False)
    for char, escaped in _HTML_SAFE_JSON.items():
        text = text.replace(char, escaped)
    return Markup(text)


def slack_escape(value: Any) -> Markup:
    """``value`` as text with ``&``, ``<`` and ``>`` escaped the way Slack asks."""
    if hasattr(value, "__html__"):
        return Markup(value)
    text = str(value)
    for char, escaped in _SLACK_ESCAPES.items():
        text = text.replace(char, escaped)
    return Markup(text)


def slack_tojson(value: Any, indent: int | None = None) -> Markup:
    """``value`` as JSON text with every string in it (keys too) Slack-escaped first.

    No ``&``, ``<`` or ``>`` is left raw, so the text is as safe as :func:`tojson`'s, and
    reads well in a Slack message (Slack shows ``&lt;`` as ``<``).
    """
    text = json.dumps(_slack_strings(value), ensure_ascii=False, indent=indent, sort_keys=False)
    return Markup(text)


def _slack_strings(value: Any) -> Any:
    if isinstance(value, str):
        return str(slack_escape(value))
    if isinstance(value, Mapping):
        return {_slack_strings(key): _slack_strings(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_slack_strings(item) for item in value]
    return value


def _slack_finalize(value: Any) -> Any:
    """What ``{{ … }}`` puts out in a Slack template: escaped, unless marked safe."""
    return value if hasattr(value, "__html__") else slack_escape(value)


def _environment(mode: Mode) -> jinja2.Environment:
    options: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "autoescape": mode == "html"}
    if mode == "slack":
        options["finalize"] = _slack_finalize
    filters: dict[str, Callable[..., Any]] = {"mask": mask, "tojson": tojson}
    if mode == "slack":
        filters |= {"tojson": slack_tojson, "e": slack_escape, "escape": slack_escape}
    return BudgetedSandbox(filters, **options)


_ENVS: Mapping[str, jinja2.Environment] = {mode: _environment(mode) for mode in MODES}


@dataclass(frozen=True)
class Template:
    """A compiled template; text without ``{{``, ``{%`` or ``{#`` is kept as a constant."""

    source: str
    _compiled: jinja2.Template | None = field(default=None, compare=False, repr=False)
    mode: Mode = "text"

    def render(
        self,
        event: Mapping[str, Any],
        route: str,
        destination: str,
        failure: Mapping[str, Any] | None = None,
    ) -> str:
        """The rendered text; :class:`TemplateError` on undefined names or sandbox violations."""
        context = {"event": event, "route": route, "destination": destination}
        return self.render_context({**context, "failure": failure})

    def render_context(self, context: Mapping[str, Any]) -> str:
        """Rendered with the names of ``context`` (relay's own messages: notifications);
        :class:`TemplateError` as :meth:`render`. The text is valid Unicode: a lone
        surrogate (from ``"\\ud800"`` in a literal, or a filter such as ``format``)
        becomes U+FFFD (:mod:`relay.text`)."""
        if self._compiled is None:
            return valid_text(self.source)
        try:
            return valid_text(render_within_budget(self._compiled, context))
        except BudgetSpentError as exc:
            raise TemplateBudgetError(f"template budget spent: {exc}") from None
        except Exception as exc:  # user code: any failure is this template's fault
            raise TemplateError(f"{type(exc).__name__}: {exc}") from exc

    @property
    def is_constant(self) -> bool:
        """True when the template is plain text (nothing to render)."""
        return self._compiled is None


def compile_template(source: str, mode: Mode = "text") -> Template:
    """Compile ``source`` for ``mode``; :class:`TemplateError` with ``lineno`` on a syntax error.

    Compiling costs about 10 µs a character: the last texts compiled are kept, so that a
    text repeated (an alias, a hot reload) is compiled once."""
    if not any(marker in source for marker in _MARKERS):
        return Template(source, mode=mode)
    compiled = _compiled(source, mode)
    if isinstance(compiled, TemplateError):
        raise TemplateError(compiled.message, compiled.lineno)
    return compiled


@functools.lru_cache(maxsize=256)
def _compiled(source: str, mode: Mode) -> Template | TemplateError:
    try:
        return Template(source, _ENVS[mode].from_string(source), mode)
    except jinja2.TemplateSyntaxError as exc:
        return TemplateError(exc.message or "syntax error", exc.lineno)


def render(
    template: Template,
    event: Mapping[str, Any],
    route: str,
    destination: str,
    failure: Mapping[str, Any] | None = None,
) -> str:
    """``template.render(...)``, as a function for callers that prefer one."""
    return template.render(event, route, destination, failure)


def outputs_outside_tojson(template: Template) -> bool:
    """True when some ``{{ … }}`` of ``template`` puts out a value not passed through tojson.

    Such a value, put into JSON text, can add keys or break the JSON; ``{{ x | tojson }}``
    (then ``| safe`` or not) cannot.
    """
    if template.is_constant:
        return False
    tree = _ENVS[template.mode].parse(template.source)
    return any(
        not _is_tojson(child)
        for output in tree.find_all(nodes.Output)
        for child in output.nodes
        if not isinstance(child, nodes.TemplateData)
    )


def is_one_tojson(template: Template) -> bool:
    """True when ``template`` is exactly one ``{{ … | tojson }}`` and nothing else."""
    if template.is_constant:
        return False
    tree = _ENVS[template.mode].parse(template.source)
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return False
    children = tree.body[0].nodes
    return len(children) == 1 and _is_tojson(children[0])


def unknown_names(template: Template, known: Collection[str]) -> list[str]:
    """The names ``template`` reads that are neither in ``known`` nor Jinja's own
    (``range``, ``dict`` …), nor set by the template itself; sorted."""
    if template.is_constant:
        return []
    env = _ENVS[template.mode]
    used = meta.find_undeclared_variables(env.parse(template.source))
    return sorted(used - set(known) - set(env.globals))


def _is_tojson(node: nodes.Node) -> bool:
    while isinstance(node, nodes.Filter) and node.name == "safe" and node.node is not None:
        node = node.node
    return isinstance(node, nodes.Filter) and node.name == "tojson"
