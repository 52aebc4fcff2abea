"""The rules file as plain data, with the line of every value, and the problems found.

YAML is composed into nodes (which keep their marks) and walked once: every value gets a
:class:`Mark` under its path, ``${VAR}`` references in string values are expanded, and
duplicate keys (which PyYAML silently accepts) are problems. Merge keys (``<<: *base``) work.

Plain scalars follow the YAML 1.2 core schema, not PyYAML's 1.1: only ``true``/``false``
are booleans (``YES``, ``on`` and ``no`` stay strings, so ``keyword: [YES, NO]`` means what
it says), and a number with a leading zero (``0044``) stays a string.

Interpolation (:mod:`relay.rules.interpolation`) applies to string values (quoted or not,
templates included), not to keys. An unquoted value is typed after expansion
(``attempts: ${N:-5}`` is the number 5).

Budget: a document that holds more than :data:`~relay.rules.expansion.MAX_NODES` values once
its aliases are expanded is one error, and nothing of it is built
(:mod:`relay.rules.expansion`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from relay.rules.expansion import MAX_NODES, where_spent
from relay.rules.interpolation import (
    Environment,
    Placeholders,
    expand,
    placeholder_names,
    referenced,
)

Path = tuple[str | int, ...]


_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it
_NULLS = {"", "~", "null", "Null", "NULL"}
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False}
_BOOLS["FALSE"] = False
_INT = re.compile(r"[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf")}
_SPECIAL_FLOATS[".nan"] = float("nan")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]")


def read_source(path: str, error: Callable[[list[str]], Exception]) -> str:
    """The text of the YAML file at ``path``; ``error([message])`` when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as exc:
        raise error([f"{path}:1: file: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise error([f"{path}:1: file: not UTF-8 text ({exc.reason})"]) from exc


def format_path(path: Path) -> str:
    """``routes[1].match.code`` for ``("routes", 1, "match", "code")``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class Problems:
    """Collects ``LABEL:LINE: where: what`` messages; :meth:`messages` sorts them by line."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._items: list[tuple[int, int, str]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, line: int, where: str, message: str) -> None:
        text = f"{self.label}:{line}: {where}: {message}"
        self._items.append((line, len(self._items), text))

    def messages(self) -> list[str]:
        return [text for _, _, text in sorted(self._items)]


class Span(NamedTuple):
    """Where a scalar's text is in the file, anchor and tag included: lines from 1,
    columns from 0, and the character offsets ``start`` and ``end`` (``text[start:end]``)."""

    line: int
    column: int
    end_line: int
    end_column: int
    start: int
    end: int


@dataclass(frozen=True)
class Mark:
    """Where a value is: ``line`` of its key (or list item); ``body_line`` for block text.

    ``body_line`` is the first line of a ``|`` or ``>`` scalar's text, so that line N of a
    template is file line ``body_line + N - 1``. ``span`` is a scalar's own text (None
    for mappings and lists).
    """

    line: int
    body_line: int | None = None
    span: Span | None = None


@dataclass(frozen=True)
class Document:
    """Plain data (dicts, lists, scalars) and the :class:`Mark` of every path in it.

    ``failed`` holds the paths whose ``${...}`` could not be expanded (already reported).
    """

    data: Any
    marks: Mapping[Path, Mark] = field(default_factory=dict)
    failed: frozenset[Path] = frozenset()
    #: the values ``${...}`` references brought in (secrets, as often as not): dry runs
    #: mask them wherever they show
    interpolated: frozenset[str] = frozenset()
    #: with :data:`PLACEHOLDERS`: the paths holding a ``<NAME>`` placeholder, and the names
    placeholders: Mapping[Path, tuple[str, ...]] = field(default_factory=dict)

    def mark(self, path: Path) -> Mark:
        """The mark of ``path``, or of its nearest ancestor that has one."""
        while path and path not in self.marks:
            path = path[:-1]
        return self.marks.get(path, Mark(1))

    def line(self, path: Path) -> int:
        return self.mark(path).line


def resolve_plain(text: str) -> Any:
    """The value of an unquoted scalar under the YAML 1.2 core schema (see module doc)."""
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if _LEADING_ZERO.match(text):
        return text
    if _INT.fullmatch(text):
        return int(text, 0) if text[:2] in ("0x", "0o") else int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return _SPECIAL_FLOATS.get(text.lower(), text)


def parse(
    text: str, env: Environment, problems: Problems, budget: int = MAX_NODES
) -> Document | None:
    """The document in ``text``, or ``None`` after adding the YAML syntax error (or the
    spent ``budget`` of values, see the module docstring) to problems."""
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        problems.add(*_syntax_error(exc))
        return None
    except (yaml.YAMLError, RecursionError) as exc:
        problems.add(1, "syntax", str(exc) or type(exc).__name__)
        return None
    if node is None:
        return Document(None, {(): Mark(1)})
    spent = where_spent(node, budget)
    if spent is not None:
        message = f"more than {budget:,} values once aliases are expanded (the most a file holds)"
        problems.add(spent[0], format_path(spent[1]), message)
        return None
    builder = _Builder(env, problems)
    data = builder.build(node, (), node.start_mark.line + 1)
    return Document(
        data,
        builder.marks,
        frozenset(builder.failed),
        frozenset(builder.values),
        builder.placeholders,
    )


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        if _FAST_LOADER is yaml.SafeLoader:
            raise
    return yaml.compose(text, Loader=yaml.SafeLoader)  # slower, with clearer messages


def _syntax_error(exc: yaml.MarkedYAMLError) -> tuple[int, str, str]:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem and exc.context_mark is not None:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return (mark.line + 1 if mark else 1), "syntax", message


class _Builder:
    """One walk over the node tree: plain data, marks, duplicate keys, interpolation."""

    def __init__(self, env: Environment, problems: Problems) -> None:
        self.env = env
        self.problems = problems
        self.marks: dict[Path, Mark] = {}
        self.failed: set[Path] = set()
        self.values: set[str] = set()  # what ${...} references brought in
        self.placeholders: dict[Path, tuple[str, ...]] = {}
        self._open: set[int] = set()  # nodes being walked, to stop at a recursive alias

    def build(self, node: yaml.Node, path: Path, line: int) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path, line)
        self.marks[path] = Mark(line)
        if id(node) in self._open:
            self.problems.add(line, format_path(path), "recursive alias")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            return [self.build(item, path + (i,), _line(item)) for i, item in enumerate(node.value)]
        finally:
            self._open.discard(id(node))

    def mapping(
        self, node: yaml.MappingNode, path: Path, skip: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first: dict[str, int] = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            key, line = self.key(key_node, path), _line(key_node)
            if key in first:
                message = f"duplicate key {key!r} (first at line {first[key]})"
                self.problems.add(line, format_path(path), message)
                continue
            first[key] = line
            if key not in skip:
                result[key] = self.build(value_node, path + (key,), line)
        for merged in merges:
            result.update(self.merge(merged, path, skip | set(result)))
        return result

    def merge(self, node: yaml.Node, path: Path, skip: frozenset[str]) -> dict[str, Any]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.problems.add(_line(source), format_path(path), "<< takes mappings only")
                continue
            merged.update(self.mapping(source, path, skip | set(merged)))
        return merged

    def key(self, node: yaml.Node, path: Path) -> str:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.add(_line(node), format_path(path), "keys must be plain strings")
            return f"<key at line {_line(node)}>"
        return str(node.value)

    def scalar(self, node: yaml.ScalarNode, path: Path, line: int) -> Any:
        block = node.style in ("|", ">")
        start, end = node.start_mark, node.end_mark
        span = Span(start.line + 1, start.column, end.line + 1, end.column, start.index, end.index)
        self.marks[path] = Mark(line, start.line + 2 if block else None, span)
        text = node.value
        if "${" in text:
            self.values.update(value for value in referenced(text, self.env) if value)
            if isinstance(self.env, Placeholders) and (names := placeholder_names(text)):
                self.placeholders[path] = names
            text, problems = expand(text, self.env)
            for message in problems:
                self.problems.add(line, format_path(path), message)
                self.failed.add(path)
        if node.style or _explicit_str(node):  # quoted or block; plain is None or ""
            return text
        return resolve_plain(text)


def _explicit_str(node: yaml.ScalarNode) -> bool:
    """True for ``!!str 12``: tagged str although the text alone would not resolve to str."""
    if node.tag != _STR:
        return False
    resolved: str = _RESOLVER.resolve(  # type: ignore[no-untyped-call]
        yaml.ScalarNode, node.value, (True, False)
    )
    return resolved != _STR


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1
