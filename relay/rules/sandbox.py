"""The Jinja sandbox templates run in, with a budget for each render.

Jinja's immutable sandbox stops templates from reaching Python's internals, but not from
working without end: loops nest, ``"x" * 10**9`` is one expression, a namespace can double
a string forty times. Every render (:func:`budget`) may therefore take at most:

- :data:`MAX_STEPS` steps: loop passes, macro calls, function, method and filter calls;
- :data:`MAX_LENGTH` characters (or items) in any one value an operation makes — checked
  before the operation where its size can be told in advance (repetition, ``+``, ``~``,
  ``%`` and ``format`` widths, ``replace``, ``join``, ``center``, ``indent`` …), else
  after — and in what it puts out;
- :data:`MAX_MADE` characters made in all (values made, values put out, each loop pass's
  text), and :data:`MAX_CPU` seconds of the thread's CPU, the backstop for work counted
  nowhere else.

Past any of them the render stops with :class:`BudgetSpent`. ``lipsum`` makes at most
:data:`_MAX_LIPSUM` paragraphs or words a paragraph.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Environment
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from markupsafe import Markup

MAX_STEPS = 100_000  #: loop passes, macro calls, function, method and filter calls per render
MAX_LENGTH = 1_000_000  #: characters (or items) in any one value, and in the output
MAX_MADE = 10_000_000  #: characters made in all during one render
MAX_CPU = 1.0  #: seconds of the rendering thread's CPU per render
_MAX_BITS = 10_000  #: bits of an integer that ``*`` or ``**`` makes
_MAX_LIPSUM = 1_000  #: paragraphs, or words in one, that ``lipsum`` makes
_PERCENT_WIDTH = re.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\{|\d+)")
#: filters whose whole-number arguments are widths, lengths or counts
_SIZED = frozenset({"center", "indent", "wordwrap", "truncate", "batch", "slice", "format"})


class BudgetSpent(Exception):
    """A render went past its budget; the message says which part."""


class _Budget:
    __slots__ = ("steps", "made", "deadline")

    def __init__(self) -> None:
        self.steps = self.made = 0
        self.deadline: float | None = None  # set at the first look: most renders take none


_ONES = frozenset({int, float, bool, type(None)})  #: values that count one, at once
_CURRENT: ContextVar[_Budget | None] = ContextVar("relay_template_budget", default=None)


def render(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """``template`` rendered with ``context`` under a budget of its own; BudgetSpent past it
    (what is put out is counted as made, so the text is within that before it is checked)."""
    token = _CURRENT.set(_Budget())
    try:
        text = template.render(**context)
    finally:
        _CURRENT.reset(token)
    if len(text) > MAX_LENGTH:
        raise BudgetSpent(f"more than {MAX_LENGTH:,} characters put out")
    return text


def step(made: int = 0) -> None:
    """One step of the render in progress, which made ``made`` characters."""
    current = _CURRENT.get()
    if current is None:  # compiling: Jinja folds constants, within the size checks
        return
    current.steps += 1
    current.made += made
    if current.steps % 64 == 0 or current.steps > MAX_STEPS or current.made > MAX_MADE:
        _look(current)


def _count(length: int) -> None:
    current = _CURRENT.get()
    if current is not None:
        current.made += length
        if current.made > MAX_MADE:
            _look(current)


def _look(current: _Budget) -> None:
    """Raise BudgetSpent for the first part of ``current`` that is spent."""
    if current.steps > MAX_STEPS:
        raise BudgetSpent(f"more than {MAX_STEPS:,} steps (loop passes and calls)")
    if current.made > MAX_MADE:
        raise BudgetSpent(f"more than {MAX_MADE:,} characters made")
    now = time.thread_time()  # a system call: looked at every 64 steps
    if current.deadline is None:
        current.deadline = now + MAX_CPU
    elif now > current.deadline:
        raise BudgetSpent(f"more than {MAX_CPU:g} s of CPU")


def size(value: Any, limit: int = MAX_LENGTH) -> int:
    """Characters and items in ``value``, nested ones included; counting stops past ``limit``."""
    kind = type(value)
    if kind is str or kind is Markup:
        return len(value)
    if kind in _ONES:
        return 1
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, Mapping):
            total += len(item) + _flat(item.keys(), stack) + _flat(item.values(), stack)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += len(item) + _flat(item, stack)
        else:
            total += 1
    return total


def _flat(items: Iterable[Any], stack: list[Any]) -> int:
    """The characters of the strings and the count of the numbers among ``items``; the
    others go on ``stack`` to be counted."""
    total = 0
    for item in items:
        kind = type(item)
        if kind is str:
            total += len(item)
        elif kind in _ONES:
            total += 1
        else:
            stack.append(item)
    return total


def within(predicted: int) -> None:
    """Refuse an operation whose result would pass :data:`MAX_LENGTH`."""
    if predicted > MAX_LENGTH:
        raise BudgetSpent(f"a value of more than {MAX_LENGTH:,} characters")


def made(value: Any) -> Any:
    """``value``, once checked (:data:`MAX_LENGTH`) and counted (:data:`MAX_MADE`)."""
    kind = type(value)
    if kind in _ONES:
        return value
    length = len(value) if kind is str or kind is Markup else size(value)
    within(length)
    _count(length)
    return value


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, counting every render's steps and sizes (module doc)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, filters: Mapping[str, Callable[..., Any]] = {}, **options: Any) -> None:
        if "finalize" in options:
            given = options["finalize"]
            options["finalize"] = lambda value: given(made(value))
        else:
            options["finalize"] = made
        super().__init__(**options)
        self.code_generator_class = _CodeGenerator
        self.globals["lipsum"] = _lipsum(generate_lorem_ipsum)
        self.filters.update(filters)
        self.filters = {name: _guarded(name, func) for name, func in self.filters.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return made(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        step()
        _check_method(getattr(__obj, "__wrapped__", __obj), args)
        return made(super().call(__context, __obj, *args, **kwargs))

    def loop_step(self, text: int) -> None:
        """Called at the start of each loop pass and macro call, with the length of the
        body's own text, which the pass puts out."""
        step(text)

    def joined(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The parts of a ``~`` concatenation, once their total is within the budget."""
        within(sum(size(part) for part in parts))
        return parts


class _CodeGenerator(CodeGenerator):
    """Counts each loop pass and macro call; checks ``~`` before it joins."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        bodies: Iterator[nodes.For | nodes.Macro | nodes.CallBlock]
        bodies = node.find_all((nodes.For, nodes.Macro, nodes.CallBlock))
        for body in bodies:
            text = sum(len(data.data) for data in body.find_all(nodes.TemplateData))
            # Jinja allows no node types of one's own: an attribute of the environment is
            # written as is, so this one is the call (a number, nothing from the template)
            call = nodes.EnvironmentAttribute(f"loop_step({text:d})", lineno=body.lineno)
            body.body.insert(0, nodes.ExprStmt(call, lineno=body.lineno))
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    numbers = isinstance(left, int) and isinstance(right, int)
    if operator == "*" and numbers:
        if left.bit_length() + right.bit_length() > _MAX_BITS:
            raise BudgetSpent(f"a number of more than {_MAX_BITS:,} bits")
    elif operator == "*":
        times = right if isinstance(right, int) else left if isinstance(left, int) else 1
        within(max(times, 0) * size(left if times is right else right))
    elif operator == "**" and numbers and right > 0 and abs(left) > 1:
        if right * left.bit_length() > _MAX_BITS:
            raise BudgetSpent(f"a number of more than {_MAX_BITS:,} bits")
    elif operator == "+" and not numbers:
        within(size(left) + size(right))
    elif operator == "%" and isinstance(left, str):
        _check_widths(left, _PERCENT_WIDTH)
        within(len(left) + size(right))


def _check_widths(template: str, fields: re.Pattern[str]) -> None:
    """Refuse a ``%`` or ``format`` template whose field widths pass the budget."""
    for found in fields.finditer(template):
        for width in found.groups():
            if width is not None and (not width.isdigit() or int(width) > MAX_LENGTH):
                raise BudgetSpent(f"a field width of more than {MAX_LENGTH:,} characters")


def _check_method(method: Any, args: tuple[Any, ...]) -> None:
    """Refuse a ``str`` method call whose result would pass :data:`MAX_LENGTH`."""
    text = getattr(method, "__self__", None)
    if not isinstance(text, str):
        return
    name = getattr(method, "__name__", "")
    if name in ("format", "format_map"):
        _check_widths(text, _FORMAT_WIDTH)
        within(len(text) + sum(size(arg) for arg in args))
    elif name in ("center", "ljust", "rjust", "zfill") and args:
        within(args[0] if isinstance(args[0], int) else 0)
    elif name == "expandtabs":
        within(len(text) * max(args[0] if args and isinstance(args[0], int) else 8, 1))
    elif name == "replace" and len(args) >= 2:
        within(_replaced(text, args[0], args[1]))
    elif name == "join" and args:
        items = args[0] if isinstance(args[0], (list, tuple, str)) else ()
        within(size(items) + len(text) * len(items))
    elif name == "translate" and args:
        within(len(text) * max(size(args[0]), 1))


def _replaced(text: Any, old: Any, new: Any) -> int:
    if not all(isinstance(part, str) for part in (text, old, new)):
        return 0
    times = text.count(old) if old else len(text) + 1
    return len(text) + times * max(len(new) - len(old), 0)


def _lipsum(lipsum: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(lipsum)
    def capped(*args: Any, **kwargs: Any) -> str:
        if any(isinstance(arg, int) and arg > _MAX_LIPSUM for arg in (*args, *kwargs.values())):
            raise BudgetSpent(f"lipsum makes at most {_MAX_LIPSUM:,} paragraphs or words")
        return lipsum(*args, **kwargs)

    return capped


_CONTEXTS = (EvalContext, Context, Environment)


def _guarded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a filter) counted as a step, its arguments and result checked."""

    @functools.wraps(function)  # keeps Jinja's pass_context & co.
    def guarded(*args: Any, **kwargs: Any) -> Any:
        step()
        data = args[1:] if args and isinstance(args[0], _CONTEXTS) else args  # pass_context
        within(max((size(arg) for arg in (*data, *kwargs.values())), default=0))
        _check_filter(name, data, kwargs)
        return made(function(*args, **kwargs))

    return guarded


def _check_filter(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    value = args[0] if args else ""
    if name in _SIZED:
        numbers = [arg for arg in (*args[1:], *kwargs.values()) if isinstance(arg, int)]
        within(max(numbers, default=0))
    text = value if isinstance(value, str) else ""
    if name == "replace" and len(args) >= 3:
        within(_replaced(text, args[1], args[2]))
    elif name == "indent":
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        within(len(text) + (text.count("\n") + 1) * size(width))
    elif name == "wordwrap":
        width = args[1] if len(args) > 1 else kwargs.get("width", 79)
        wrap = args[3] if len(args) > 3 else kwargs.get("wrapstring") or "\n"
        lines = len(text) // max(width if isinstance(width, int) else 1, 1) + 1
        within(len(text) + lines * size(wrap))
    elif name == "join":
        glue = args[1] if len(args) > 1 else kwargs.get("d", "")
        count = len(value) if isinstance(value, (list, tuple, str)) else 1
        within(size(value) + size(glue) * count)
    elif name == "format":
        _check_widths(text, _PERCENT_WIDTH)
