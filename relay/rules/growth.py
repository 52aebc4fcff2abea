"""How big a value a template's operation would make, told before it is made.

For the sandbox's budget (:mod:`relay.rules.sandbox`): :func:`size` counts what a value
holds, and the ``check_*`` functions raise :class:`BudgetSpentError` for an operation whose
result would pass :data:`MAX_LENGTH` — repetition, ``+``, ``%`` and ``format`` widths, a
``str`` method (``center``, ``replace``, ``join`` …) or a filter (``indent``, ``wordwrap``,
``join`` …) — or an integer past :data:`_MAX_BITS`, before Python allocates it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import Markup

from relay.errors import BudgetSpentError

MAX_LENGTH = 1_000_000  #: characters (or items) in any one value, and in the output
_MAX_BITS = 10_000  #: bits of an integer that ``*`` or ``**`` makes
_PERCENT_WIDTH = re.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\{|\d+)")
#: filters whose whole-number arguments are widths, lengths or counts
_SIZED = frozenset({"center", "indent", "wordwrap", "truncate", "batch", "slice", "format"})
ONES = frozenset({int, float, bool, type(None)})  #: values that count one, at once


def size(value: Any, limit: int = MAX_LENGTH) -> int:
    """Characters and items in ``value``, nested ones included; counting stops past ``limit``."""
    kind = type(value)
    if kind is str or kind is Markup:
        return len(value)
    if kind in ONES:
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
        elif kind in ONES:
            total += 1
        else:
            stack.append(item)
    return total


def within(predicted: int) -> None:
    """Refuse an operation whose result would pass :data:`MAX_LENGTH`."""
    if predicted > MAX_LENGTH:
        raise BudgetSpentError(f"a value of more than {MAX_LENGTH:,} characters")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``left operator right`` (``*``, ``**``, ``+``, ``%``) if what it makes would
    pass the budget."""
    numbers = isinstance(left, int) and isinstance(right, int)
    if operator == "*" and numbers:
        if left.bit_length() + right.bit_length() > _MAX_BITS:
            raise BudgetSpentError(f"a number of more than {_MAX_BITS:,} bits")
    elif operator == "*":
        times, repeated = (right, left) if isinstance(right, int) else (left, right)
        within(max(times, 0) * size(repeated) if isinstance(times, int) else 0)
    elif operator == "**" and numbers and right > 0 and abs(left) > 1:
        if right * left.bit_length() > _MAX_BITS:
            raise BudgetSpentError(f"a number of more than {_MAX_BITS:,} bits")
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
                raise BudgetSpentError(f"a field width of more than {MAX_LENGTH:,} characters")


def check_method(method: Any, args: tuple[Any, ...]) -> None:
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


def check_filter(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Refuse the filter ``name`` on ``args`` (the value first) if what it makes would pass
    the budget."""
    value = args[0] if args else ""
    if name in _SIZED:
        numbers = [arg for arg in (*args[1:], *kwargs.values()) if isinstance(arg, int)]
        within(max(numbers, default=0))
    text = value if isinstance(value, str) else ""
    if name == "replace" and len(args) >= 3:
        within(_replaced(text, args[1], args[2]))
    elif name == "indent":
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        per_line = width if isinstance(width, int) else size(width)
        within(len(text) + (text.count("\n") + 1) * per_line)
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
