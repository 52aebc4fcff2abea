"""The Jinja sandbox templates run in, with a budget for each render.

Jinja's immutable sandbox stops templates from reaching Python's internals, but not from
working without end: loops nest, ``"x" * 10**9`` is one expression, a namespace can double
a string forty times. Every render (:func:`render`) may therefore take at most:

- :data:`MAX_STEPS` steps: loop passes, macro calls, function, method and filter calls;
- :data:`~relay.rules.growth.MAX_LENGTH` characters (or items) in any one value an
  operation makes — checked before the operation where its size can be told in advance
  (:mod:`relay.rules.growth`), else after — and in what it puts out;
- :data:`MAX_MADE` characters made in all (values made, values put out, each loop pass's
  text), and :data:`MAX_CPU` seconds of the thread's CPU, the backstop for work counted
  nowhere else.

Past any of them the render stops with :class:`BudgetSpentError`. ``lipsum`` makes at most
:data:`_MAX_LIPSUM` paragraphs or words a paragraph.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
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

from relay.errors import BudgetSpentError
from relay.rules.growth import (
    MAX_LENGTH,
    ONES,
    check_binop,
    check_filter,
    check_method,
    size,
    within,
)

MAX_STEPS = 100_000  #: loop passes, macro calls, function, method and filter calls per render
MAX_MADE = 10_000_000  #: characters made in all during one render
MAX_CPU = 1.0  #: seconds of the rendering thread's CPU per render
_MAX_LIPSUM = 1_000  #: paragraphs, or words in one, that ``lipsum`` makes


class _Budget:
    __slots__ = ("steps", "made", "deadline", "given")

    def __init__(self, given: frozenset[int] = frozenset()) -> None:
        self.steps = self.made = 0
        self.deadline: float | None = None  # set at the first look: most renders take none
        #: ids of the values the render was given (the event …): relay's own limits bound
        #: them, so a filter's arguments are not measured when they are one of them
        self.given = given


_CURRENT: ContextVar[_Budget | None] = ContextVar("relay_template_budget", default=None)


def render(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """``template`` rendered with ``context`` under a budget of its own; BudgetSpentError past it
    (what is put out is counted as made, so the text is within that before it is checked)."""
    token = _CURRENT.set(_Budget(frozenset(map(id, context.values()))))
    try:
        text = template.render(**context)
    finally:
        _CURRENT.reset(token)
    if len(text) > MAX_LENGTH:
        raise BudgetSpentError(f"more than {MAX_LENGTH:,} characters put out")
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
    """Raise BudgetSpentError for the first part of ``current`` that is spent."""
    if current.steps > MAX_STEPS:
        raise BudgetSpentError(f"more than {MAX_STEPS:,} steps (loop passes and calls)")
    if current.made > MAX_MADE:
        raise BudgetSpentError(f"more than {MAX_MADE:,} characters made")
    now = time.thread_time()  # a system call: looked at every 64 steps
    if current.deadline is None:
        current.deadline = now + MAX_CPU
    elif now > current.deadline:
        raise BudgetSpentError(f"more than {MAX_CPU:g} s of CPU")


def made(value: Any) -> Any:
    """``value``, once checked (:data:`MAX_LENGTH`) and counted (:data:`MAX_MADE`)."""
    kind = type(value)
    if kind in ONES:
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
        check_binop(operator, left, right)
        return made(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        step()
        check_method(getattr(__obj, "__wrapped__", __obj), args)
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


def _lipsum(lipsum: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(lipsum)
    def capped(*args: Any, **kwargs: Any) -> str:
        if any(isinstance(arg, int) and arg > _MAX_LIPSUM for arg in (*args, *kwargs.values())):
            raise BudgetSpentError(f"lipsum makes at most {_MAX_LIPSUM:,} paragraphs or words")
        return lipsum(*args, **kwargs)

    return capped


_CONTEXTS = (EvalContext, Context, Environment)


def _guarded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a filter) counted as a step, its arguments and result checked."""

    @functools.wraps(function)  # keeps Jinja's pass_context & co.
    def guarded(*args: Any, **kwargs: Any) -> Any:
        step()
        data = args[1:] if args and isinstance(args[0], _CONTEXTS) else args  # pass_context
        current = _CURRENT.get()
        given = current.given if current is not None else frozenset()
        measured = (size(arg) for arg in (*data, *kwargs.values()) if id(arg) not in given)
        within(max(measured, default=0))
        check_filter(name, data, kwargs)
        return made(function(*args, **kwargs))

    return guarded
