"""JSON payloads written as YAML: mappings and lists whose string leaves are templates.

An http ``body`` or Slack ``blocks`` given as a YAML mapping or list is a
:class:`Structured` payload. Each string in it is a template, rendered to a string; numbers,
booleans and nulls stay as written; keys are never templates. The structure is built first
and serialised with ``json`` after, so nothing in the event can add a key, end a string
or break the JSON. A string that is exactly one ``{{ … | tojson }}`` is the JSON value
itself (``code: "{{ event.code | int | tojson }}"`` is a number, ``callback: "{{
event.callback | tojson }}"`` an object).

:func:`looks_like_json` tells a template string meant as JSON text (``'{"a": …}'``) from
plain text, for the http action (such a body must render to JSON) and the lint (which
recommends the structured form).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from relay.errors import RuleValueError, TemplateError
from relay.rules.document import Path, format_path
from relay.rules.reader import FAILED, Reader
from relay.rules.templates import Mode, Template, is_one_tojson
from relay.text import valid

#: text that opens a JSON object or array (not a Jinja tag, not ``[ALERT] …``)
_JSON_START = re.compile(r"\s*(\{\s*[\"}]|\[\s*(\{(?![{%#])|\[|\"|\]))")


@dataclass(frozen=True)
class Slot:
    """A template leaf; ``as_json`` when it is one ``{{ … | tojson }}`` (its value is parsed)."""

    template: Template
    as_json: bool = False

    def render(
        self,
        event: Mapping[str, Any],
        route: str,
        destination: str,
        failure: Mapping[str, Any] | None = None,
    ) -> Any:
        text = self.template.render(event, route, destination, failure)
        return valid(json.loads(text)) if self.as_json else text


@dataclass(frozen=True)
class Structured:
    """A JSON payload as a tree: read-only mappings, tuples, :class:`Slot` leaves, scalars.

    ``name`` is the option it came from (``body``, ``blocks``), for error messages.
    """

    tree: Any
    name: str = "body"

    def render(
        self,
        event: Mapping[str, Any],
        route: str,
        destination: str,
        failure: Mapping[str, Any] | None = None,
    ) -> Any:
        """The payload as JSON-native data; :class:`TemplateError` naming the failing leaf."""
        return _render(self.tree, (self.name,), (event, route, destination, failure))


Context = tuple[Mapping[str, Any], str, str, Mapping[str, Any] | None]


def _render(node: Any, at: Path, context: Context) -> Any:
    if isinstance(node, Slot):
        try:
            return node.render(*context)
        except TemplateError as exc:
            raise TemplateError(f"{format_path(at)}: {exc.message}") from exc
    if isinstance(node, Mapping):
        return {key: _render(value, at + (key,), context) for key, value in node.items()}
    if isinstance(node, tuple):
        return [_render(item, at + (i,), context) for i, item in enumerate(node)]
    return node


def read_structured(reader: Reader, path: Path, value: Any, mode: Mode) -> Structured:
    """``value`` (a mapping or list from the rules file) as a :class:`Structured` payload.

    Each problem (a template syntax error, a number JSON cannot carry) is reported at its
    own line; then :data:`FAILED`.
    """
    tree = _read(reader, path, value, mode)
    if _has_failed(tree):
        return FAILED  # type: ignore[no-any-return]  # FAILED stands in for any type
    return Structured(tree, str(path[-1]))


def _read(reader: Reader, path: Path, value: Any, mode: Mode) -> Any:
    if isinstance(value, Mapping):
        items = {key: _read(reader, path + (key,), item, mode) for key, item in value.items()}
        return MappingProxyType(items)
    if isinstance(value, list):
        return tuple(_read(reader, path + (i,), item, mode) for i, item in enumerate(value))
    if isinstance(value, str):
        return reader.value(_slot(mode), path, value)
    return reader.value(_scalar, path, value)


def _slot(mode: Mode) -> Any:
    def parse(reader: Reader, path: Path, value: str) -> Any:
        template = reader.template(path, value, mode)
        if template is FAILED:
            return FAILED
        return Slot(template, is_one_tojson(template))

    return parse


def _scalar(reader: Reader, path: Path, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise RuleValueError(f"{value!r} is not a JSON number")
    return value


def _has_failed(tree: Any) -> bool:
    if tree is FAILED:
        return True
    if isinstance(tree, Mapping):
        return any(_has_failed(item) for item in tree.values())
    if isinstance(tree, tuple):
        return any(_has_failed(item) for item in tree)
    return False


def looks_like_json(source: str) -> bool:
    """True when template text starts as a JSON object or array does (``{"``, ``[{`` …)."""
    return _JSON_START.match(source) is not None


def is_json_media_type(content_type: str) -> bool:
    """``application/json``, ``text/json`` or any ``…+json``, parameters aside."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def json_required(source: str, content_type: str | None) -> str | None:
    """Why a body rendered from template ``source`` must be JSON, or ``None`` if it need not.

    ``content_type`` is the destination's own Content-Type header, if it has one: a JSON
    media type requires JSON, any other frees the body. Without one, a template written as
    a JSON object or array (:func:`looks_like_json`) must render to JSON.
    """
    if content_type is not None:
        return f"Content-Type is {content_type}" if is_json_media_type(content_type) else None
    return "the template is written as JSON" if looks_like_json(source) else None
