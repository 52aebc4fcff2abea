"""Route conditions (config/README.md: Conditions) compiled once per ruleset; matching is pure.

:func:`compile_condition` turns a ``match`` mapping (plain data) into a :class:`Condition`
whose ``test(event)`` is a tree of closures; :class:`~relay.rules.index.Index` finds the routes
worth testing for an event. Nothing here does I/O. How fields are read and compared: :mod:`.fields`.

Conditions: a mapping is AND over its entries; ``any: [...]``, ``all: [...]`` and
``not: {...}`` combine conditions; any other key is a field path compared with a scalar
(equals), a list (any of) or a mapping of operators, ANDed: ``equals``, ``in``, ``not``,
``prefix``, ``suffix``, ``contains`` (each a string or a list, any of), ``regex``
(searched anywhere, on RE2: linear time, no backreferences or lookaround),
``range: [lo, hi]`` (numeric, inclusive; a non-numeric field does not match) and
``exists: true|false``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

from relay.errors import ConditionError
from relay.rules.fields import Event, Field, as_number, as_text, field_problem
from relay.rules.fields import field as field_access
from relay.rules.suggest import did_you_mean

Predicate = Callable[[Any], bool]
Path = tuple[str | int, ...]

COMBINATORS = ("any", "all", "not")
OPERATORS = ("equals", "in", "not", "prefix", "suffix", "contains", "regex", "range", "exists")
_SCALARS = (str, int, float, bool)
_LISTS = (list, tuple)  # tuple: a frozen spec (Route.match) compiles the same


@dataclass(frozen=True)
class ConditionProblem:
    """One fault in a condition; paths are relative to the ``match`` mapping.

    ``where`` is what the message is about (the field, or the mapping holding an unknown
    field); ``at`` is the node at fault (an operator key, a list item), for its line.
    """

    where: Path
    at: Path
    message: str


@dataclass(frozen=True)
class Condition:
    """A compiled ``match``: ``test(event) -> bool``, and ``keys`` for the index.

    ``keys`` maps a field to the canonical values one of which the event's field must have
    for ``test`` to be true (from top-level equality and list entries).
    """

    test: Callable[[Event], bool]
    keys: Mapping[str, frozenset[Hashable]] = field(default_factory=dict)


def _always(_: Any) -> bool:
    return True


def _never(_: Any) -> bool:
    return False


MATCH_ALL = Condition(_always)


def compile_condition(spec: Mapping[str, Any] | None) -> Condition:
    """Compile a ``match`` mapping; ``None`` or ``{}`` matches every event.

    Raises :class:`ConditionError` listing every problem found.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return MATCH_ALL
    compiler = _Compiler()
    test = compiler.mapping(spec, ())
    if compiler.problems:
        raise ConditionError(compiler.problems)
    return Condition(test, index_keys(spec))


def index_keys(spec: Mapping[str, Any]) -> dict[str, frozenset[Hashable]]:
    """For each top-level field compared by equality, the canonical values it may take."""
    keys = {}
    for name, value in spec.items():
        if name in COMBINATORS:
            continue
        if isinstance(value, Mapping):
            value = value.get("equals", value.get("in"))
        values = value if isinstance(value, _LISTS) else [value]
        if values and all(isinstance(v, _SCALARS) for v in values):
            canon = field_access(name).canon
            keys[name] = frozenset(canon(v) for v in values)
    return keys


def _all(tests: Sequence[Predicate]) -> Predicate:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda value: first(value) and second(value)
    frozen = tuple(tests)
    return lambda value: all(test(value) for test in frozen)


def _any(tests: Sequence[Predicate]) -> Predicate:
    if len(tests) == 1:
        return tests[0]
    frozen = tuple(tests)
    return lambda value: any(test(value) for test in frozen)


def _bounds(arg: Any) -> tuple[float, float] | None:
    if not isinstance(arg, _LISTS) or len(arg) != 2:
        return None
    numbers = [as_number(item) for item in arg if not isinstance(item, str)]
    if len(numbers) != 2 or any(n is None or n != n for n in numbers):
        return None
    return numbers[0], numbers[1]  # type: ignore[return-value]


def compile_regex(source: str, ignore_case: bool = False) -> Any:
    """A rule's regex on RE2: matching takes time linear in the text whatever the pattern
    (no backtracking blow-up from a pattern like ``^(\\w+\\s?)+$``). ValueError, with
    RE2's reason, for a pattern RE2 does not take (backreferences, lookaround)."""
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(source, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        raise ValueError(
            reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        ) from None


def regex_search(pattern: Any, text: str) -> bool:
    """``pattern.search(text)``; lone surrogates (which RE2's UTF-8 cannot carry) count as
    U+FFFD."""
    try:
        return pattern.search(text) is not None
    except UnicodeEncodeError:
        return pattern.search(text.encode("utf-8", "replace").decode("utf-8")) is not None


def _takes(at: Path, what: str) -> str:
    """``"in takes a list"`` under an operator, ``"expected a list"`` for a bare value."""
    name = at[-1] if at and at[-1] in OPERATORS else None
    return f"{name} takes {what}" if name else f"expected {what}"


def _scalar_problem(value: Any, what: str) -> str | None:
    if value is None:
        return f"{what} is null, which never matches (use exists: false for a missing field)"
    if not isinstance(value, _SCALARS):
        return f"{what} must be a string, number or boolean"
    return None


class _Compiler:
    """Builds predicates, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[ConditionProblem] = []

    def fail(self, where: Path, at: Path, message: str) -> Predicate:
        self.problems.append(ConditionProblem(where, at, message))
        return _never

    def mapping(self, spec: Any, at: Path) -> Predicate:
        if not isinstance(spec, Mapping):
            return self.fail(at, at, "expected a mapping of conditions")
        return _all([self.entry(str(key), value, at + (key,)) for key, value in spec.items()])

    def entry(self, key: str, value: Any, at: Path) -> Predicate:
        if key == "not":
            inner = self.mapping(value, at)
            return lambda event: not inner(event)
        if key in ("any", "all"):
            return self.combination(key, value, at)
        problem = field_problem(key)
        if problem:
            return self.fail(at[:-1], at, problem)
        access = field_access(key)
        test, get = self.value(access, value, at, at), access.get
        if "." not in key:  # the common case, one call fewer
            return lambda event: test(event.get(key))
        return lambda event: test(get(event))

    def combination(self, key: str, value: Any, at: Path) -> Predicate:
        if not isinstance(value, _LISTS) or not value:
            return self.fail(at, at, f"{key} takes a non-empty list of conditions")
        tests = [self.mapping(item, at + (i,)) for i, item in enumerate(value)]
        return _all(tests) if key == "all" else _any(tests)

    def value(self, access: Field, spec: Any, where: Path, at: Path) -> Predicate:
        if isinstance(spec, Mapping):
            return self.operators(access, spec, where, at)
        if isinstance(spec, _LISTS):
            return self.op_in(access, spec, where, at)
        return self.op_equals(access, spec, where, at)

    def operators(self, access: Field, spec: Mapping[str, Any], where: Path, at: Path) -> Predicate:
        if not spec:
            return self.fail(where, at, "no operator given")
        tests = []
        for name, arg in spec.items():
            method = getattr(self, f"op_{name}", None) if name in OPERATORS else None
            if method is None:
                hint = did_you_mean(str(name), OPERATORS)
                tests.append(self.fail(where, at + (name,), f"unknown operator {name!r}{hint}"))
            else:
                tests.append(method(access, arg, where, at + (name,)))
        return _all(tests)

    def op_equals(self, access: Field, arg: Any, where: Path, at: Path) -> Predicate:
        if isinstance(arg, (*_LISTS, Mapping)):
            return self.fail(where, at, _takes(at, "one value (in: takes a list)"))
        problem = _scalar_problem(arg, "the value")
        if problem:
            return self.fail(where, at, problem)
        canon, key = access.canon, access.canon(arg)
        return lambda value: canon(value) == key

    def op_in(self, access: Field, arg: Any, where: Path, at: Path) -> Predicate:
        if not isinstance(arg, _LISTS) or not arg:
            return self.fail(where, at, _takes(at, "a non-empty list of values"))
        for i, item in enumerate(arg):
            problem = _scalar_problem(item, f"item {i}")
            if problem:
                return self.fail(where, at + (i,), problem)
        canon, keys = access.canon, frozenset(access.canon(item) for item in arg)
        return lambda value: canon(value) in keys

    def op_not(self, access: Field, arg: Any, where: Path, at: Path) -> Predicate:
        inner = self.value(access, arg, where, at)
        return lambda value: not inner(value)

    def op_prefix(self, access: Field, arg: Any, where: Path, at: Path) -> Predicate:
        return self.text_op(access, arg, where, at, str.startswith)

    def op_suffix(self, access: Field, arg: Any, where: Path, at: Path) -> Predicate:
        return self.text_op(access, arg, where, at, str.endswith)

    def op_contains(self, access: Field, arg: Any, where: Path, at: Path) -> Predicate:
        def contains(text: str, parts: tuple[str, ...]) -> bool:
            return any(part in text for part in parts)

        return self.text_op(access, arg, where, at, contains)

    def text_op(
        self,
        access: Field,
        arg: Any,
        where: Path,
        at: Path,
        check: Callable[[str, tuple[str, ...]], bool],
    ) -> Predicate:
        items = arg if isinstance(arg, _LISTS) else [arg]
        texts = [as_text(item) for item in items]
        if not items or None in texts:
            return self.fail(where, at, _takes(at, "a string or a non-empty list of strings"))
        norm, parts = access.norm, tuple(access.norm(t) for t in texts if t is not None)

        def test(value: Any) -> bool:
            text = value if value.__class__ is str else as_text(value)
            return text is not None and check(norm(text), parts)

        def test_as_is(value: Any) -> bool:
            text = value if value.__class__ is str else as_text(value)
            return text is not None and check(text, parts)

        return test if access.ignores_case else test_as_is

    def op_regex(self, access: Field, arg: Any, where: Path, at: Path) -> Predicate:
        if not isinstance(arg, str):
            return self.fail(where, at, _takes(at, "a string"))
        try:
            pattern = compile_regex(arg, ignore_case=access.ignores_case)
        except ValueError as exc:
            return self.fail(where, at, f"bad regex {arg!r}: {exc}")

        def test(value: Any) -> bool:
            text = value if value.__class__ is str else as_text(value)
            return text is not None and regex_search(pattern, text)

        return test

    def op_range(self, access: Field, arg: Any, where: Path, at: Path) -> Predicate:
        bounds = _bounds(arg)
        if bounds is None:
            return self.fail(where, at, _takes(at, f"[lo, hi] numbers, got {arg!r}"))
        low, high = bounds
        if low > high:
            return self.fail(where, at, f"range [{arg[0]}, {arg[1]}] is empty (lo > hi)")

        def test(value: Any) -> bool:
            number = as_number(value)
            return number is not None and low <= number <= high

        return test

    def op_exists(self, access: Field, arg: Any, where: Path, at: Path) -> Predicate:
        if not isinstance(arg, bool):
            return self.fail(where, at, _takes(at, "true or false"))
        return (lambda value: value is not None) if arg else (lambda value: value is None)
