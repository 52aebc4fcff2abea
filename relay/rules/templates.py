"""Jinja2 templates in rules: compiled at load time, rendered per delivery.

Templates run in Jinja's immutable sandbox (no ``__class__``-style escapes, no mutating the
event for the next destination) with :class:`jinja2.StrictUndefined`, so a name that does not
exist is an error rather than an empty string. Autoescape is off: output is not HTML.

A template sees ``event`` (the event dict, README: Events), ``route`` (route name, or ``default``)
and ``destination`` (destination name), and two filters besides Jinja's own:

- ``mask``: keep the last 4 characters, star the rest (``447700900123`` → ``********0123``);
  ``None`` becomes ``""``.
- ``tojson``: ``json.dumps`` keeping non-ASCII text as is and keys in their order;
  ``indent=`` is passed through.

Text that arrives in the event (an SMS saying ``{{ 7*7 }}``) is data: it is never evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from relay.errors import RelayError

_MARKERS = ("{{", "{%", "{#")


class TemplateError(RelayError):
    """A template failed to compile (``lineno`` set, 1-based in the template) or to render."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        self.message = message
        self.lineno = lineno
        super().__init__(message)


def mask(value: Any) -> str:
    """All but the last 4 characters of ``value`` as ``*``; ``None`` → ``""``."""
    if value is None:
        return ""
    text = str(value)
    return "*" * max(len(text) - 4, 0) + text[-4:]


def tojson(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON text, non-ASCII kept, keys in their order."""
    return json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=False)


def _environment() -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["mask"] = mask
    env.filters["tojson"] = tojson
    return env


_ENV = _environment()


@dataclass(frozen=True)
class Template:
    """A compiled template; text without ``{{``, ``{%`` or ``{#`` is kept as a constant."""

    source: str
    _compiled: jinja2.Template | None = field(default=None, compare=False, repr=False)

    def render(self, event: Mapping[str, Any], route: str, destination: str) -> str:
        """The rendered text; :class:`TemplateError` on undefined names or sandbox violations."""
        if self._compiled is None:
            return self.source
        try:
            return self._compiled.render(event=event, route=route, destination=destination)
        except Exception as exc:  # user code: any failure is this template's fault
            raise TemplateError(f"{type(exc).__name__}: {exc}") from exc


def compile_template(source: str) -> Template:
    """Compile ``source``; :class:`TemplateError` with ``lineno`` on a syntax error."""
    if not any(marker in source for marker in _MARKERS):
        return Template(source)
    try:
        return Template(source, _ENV.from_string(source))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(exc.message or "syntax error", exc.lineno) from exc


def render(template: Template, event: Mapping[str, Any], route: str, destination: str) -> str:
    """``template.render(...)``, as a function for callers that prefer one."""
    return template.render(event, route, destination)
