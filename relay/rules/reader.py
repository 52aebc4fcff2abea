"""Checking plain rules data against tables of keys, one problem per bad value.

A :class:`Reader` walks data from a :class:`~relay.rules.document.Document`, reporting each
problem at its path's line and carrying on, so that a file shows every problem at once.
Value parsers take ``(reader, path, value)`` and return the parsed value, raise
:class:`RuleValueError` for a problem with that value, or return :data:`FAILED` once they have
reported problems inside it themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relay.errors import RuleValueError, TemplateError
from relay.rules.document import Document, Path, Problems, format_path
from relay.rules.suggest import did_you_mean
from relay.rules.templates import Mode, Template, compile_template
from relay.times import parse_duration


class _Failed:
    def __repr__(self) -> str:
        return "FAILED"


#: what a parser returns after reporting the problems inside its value; typed Any so that a
#: parser of any type may return it (each such return is marked for mypy's warn_return_any)
FAILED: Any = _Failed()


Parser = Callable[["Reader", Path, Any], Any]


@dataclass(frozen=True)
class Key:
    """One allowed key: how to parse its value, whether it must be there, attribute name."""

    parse: Parser
    required: bool = False
    attr: str | None = None


class Reader:
    """Validates data against key tables, collecting problems in ``problems``.

    ``template_text``: the characters of template text the file may hold in all (each
    distinct text counted once), or None for no cap: compiling costs about 10 µs a
    character, and a candidate file must not cost a web thread more than a second or two.
    ``files``: whether files the rules name (an http destination's ``tls``) are read; a
    file read without the environment (a candidate) reads none.
    """

    def __init__(
        self,
        doc: Document,
        problems: Problems,
        template_text: int | None = None,
        files: bool = True,
    ) -> None:
        self.doc = doc
        self.problems = problems
        self.files = files
        self._template_text = self._template_cap = template_text
        self._sources: set[str] = set()

    def error(self, path: Path, message: str, *, where: Path | None = None) -> None:
        """Report ``message`` about ``where`` (default ``path``) at the line of ``path``."""
        label = format_path(path if where is None else where)
        self.problems.add(self.doc.line(path), label, message)

    def error_at(self, line: int, where: Path, message: str) -> None:
        self.problems.add(line, format_path(where), message)

    def fields(self, path: Path, data: Any, keys: Mapping[str, Key]) -> dict[str, Any] | None:
        """Parsed values by attribute name, or ``None`` after reporting any problem."""
        if not isinstance(data, Mapping):
            self.error(path, "expected a mapping")
            return None
        ok = self.unknown_keys(path, data, keys)
        result = {}
        for name, key in keys.items():
            if name in data:
                result[key.attr or name] = value = self.value(key.parse, path + (name,), data[name])
                ok = ok and value is not FAILED
            elif key.required:
                self.error(path, f"missing required key {name!r}")
                ok = False
        return result if ok else None

    def unknown_keys(self, path: Path, data: Mapping[str, Any], allowed: Mapping[str, Any]) -> bool:
        """Report each key of ``data`` not in ``allowed``; True when there is none."""
        unknown = [key for key in data if key not in allowed]
        for key in unknown:
            message = f"unknown key {key!r}{did_you_mean(key, allowed)}"
            self.error(path + (key,), message, where=path)
        return not unknown

    def value(self, parse: Parser, path: Path, value: Any) -> Any:
        if self._already_failed(path):
            return FAILED
        try:
            return parse(self, path, value)
        except RuleValueError as exc:
            self.error(path, str(exc) + self._placeholder_hint(path))
            return FAILED

    def _placeholder_hint(self, path: Path) -> str:
        """For a value with ``<NAME>`` placeholders (a file read without the environment):
        why it holds ``<NAME>``, and how to give it a value to check."""
        names = self.doc.placeholders.get(path)
        if not names:
            return ""
        name = names[0]
        return (
            f" (${{{name}}} is <{name}> here: the environment is not read; "
            f"give it a default to check it, ${{{name}:-…}})"
        )

    def _already_failed(self, path: Path) -> bool:
        """True when ``path`` holds a value whose ``${...}`` could not be expanded."""
        return path in self.doc.failed

    def template(self, path: Path, source: str, mode: Mode = "text") -> Template:
        """``source`` compiled for ``mode``; a syntax error is reported at its own line."""
        if self._template_text is not None and source not in self._sources:
            self._sources.add(source)
            self._template_text -= len(source)
            if self._template_text < 0:
                self._template_text = None  # reported once
                cap = f"{self._template_cap:,}"
                self.error(path, f"more than {cap} characters of template text in all")
                return FAILED  # type: ignore[no-any-return]  # FAILED stands in for any type
        try:
            return compile_template(source, mode)
        except TemplateError as exc:
            mark = self.doc.mark(path)
            line = mark.line
            if mark.body_line is not None and exc.lineno:
                line = mark.body_line + exc.lineno - 1
            self.error_at(line, path, f"template syntax error: {exc.message}")
            return FAILED  # type: ignore[no-any-return]  # FAILED stands in for any type


def string(reader: Reader, path: Path, value: Any) -> str:
    if not isinstance(value, str):
        raise RuleValueError(f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise RuleValueError("must not be empty")
    return value


def text_or_number(reader: Reader, path: Path, value: Any) -> str:
    """A string; numbers are taken as written (``from: 447700900123``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return string(reader, path, value)


def boolean(reader: Reader, path: Path, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RuleValueError(f"expected true or false, got {_kind(value)}")
    return value


def duration(reader: Reader, path: Path, value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise RuleValueError(str(exc)) from None
    if seconds <= 0:
        raise RuleValueError(f"duration {value!r} must be greater than 0")
    return seconds


def positive_int(reader: Reader, path: Path, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RuleValueError(f"expected a whole number of at least 1, got {value!r}")
    return value


def url(reader: Reader, path: Path, value: Any) -> str:
    """An http(s) URL; one with a ``<NAME>`` placeholder is taken as it is (a file read
    without the environment: it is compared, never sent)."""
    text = string(reader, path, value)
    if path in reader.doc.placeholders:
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RuleValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text


def template(reader: Reader, path: Path, value: Any) -> Template:
    """A template string whose output is not escaped (see :data:`~relay.rules.templates.Mode`)."""
    return reader.template(path, template_source(value))


def html_template(reader: Reader, path: Path, value: Any) -> Template:
    """A template string whose values are HTML-escaped (email ``html``)."""
    return reader.template(path, template_source(value), "html")


def slack_template(reader: Reader, path: Path, value: Any) -> Template:
    """A template string whose values are escaped for Slack's mrkdwn (``&``, ``<``, ``>``)."""
    return reader.template(path, template_source(value), "slack")


def template_source(value: Any) -> str:
    if not isinstance(value, str):
        raise RuleValueError(f"expected a template string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r}"
