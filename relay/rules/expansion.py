"""How many values a YAML document holds once its aliases are expanded.

An alias repeats everything its anchor holds, so a few hundred bytes can stand for billions
of values ("billion laughs": nine anchors of nine aliases each). The rules loader counts
the values of the expanded document before building anything: each distinct node is
counted once and its count reused wherever an alias repeats it, so counting costs what the
text is long, not what it expands to, and a file over the budget is refused at once.

A long scalar counts one value per :data:`SCALAR_UNIT` characters (at least one): what is
built from a document (each string read, compared, compiled) costs what its text is long,
and an alias can repeat a long string as easily as a short one.
"""

from __future__ import annotations

import yaml

Path = tuple[str | int, ...]

#: values (mapping values, list items, scalars) a rules file may hold once its aliases
#: are expanded: the 10,000 routes of ``make bench``'s largest file hold 92,353
MAX_NODES = 500_000
SCALAR_UNIT = 100  #: characters of a scalar that count as one value

_MERGE = "tag:yaml.org,2002:merge"


def where_spent(node: yaml.Node, budget: int = MAX_NODES) -> tuple[int, Path] | None:
    """None when ``node`` holds at most ``budget`` values expanded; else the line and the
    path of the key under which the count passes ``budget``."""
    sizes: dict[int, int] = {}
    if _expanded_size(node, sizes, budget) <= budget:
        return None
    return _spent_at(node, sizes, budget)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], budget: int) -> int:
    """The values under ``node`` (itself included) with every alias expanded, counted
    once per distinct node (``sizes`` keeps them) and at most ``budget + 1``. A merge
    counts all it merges: an upper bound of what the builder walks."""
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias counts once: the builder reports it
    children = (v for _, v in node.value) if isinstance(node, yaml.MappingNode) else node.value
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, budget)
        if total > budget:
            break
    sizes[id(node)] = total = min(total, budget + 1)
    return total


def _spent_at(node: yaml.Node, sizes: dict[int, int], budget: int) -> tuple[int, Path]:
    """The line and path of the key under which the document passes ``budget`` values
    (mapping keys followed down as far as they go)."""
    path: Path = ()
    line, left = node.start_mark.line + 1, budget
    while isinstance(node, yaml.MappingNode):
        left -= 1
        for key, value in node.value:
            size = _scalar(value) if isinstance(value, yaml.ScalarNode) else sizes.get(id(value), 1)
            if size > left and key.tag != _MERGE and isinstance(key, yaml.ScalarNode):
                line, path, node = key.start_mark.line + 1, path + (str(key.value),), value
                break
            left -= size
        else:
            break
    return line, path


def _scalar(node: yaml.ScalarNode) -> int:
    return 1 + len(node.value) // SCALAR_UNIT
