"""What a hostile rules file costs before relay refuses it: a 458-byte alias bomb ("billion
laughs", 9 ** 10 values once expanded) and a template of nested loops, each timed from
the text to the error (best of a few runs), beside the values the largest file of
``bench.matching`` (10,000 routes) holds against the loader's budget.

    python -m bench budgets
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.matching import ruleset_text
from relay.errors import RulesError, TemplateBudgetError
from relay.rules import load_rules_text
from relay.rules.expansion import MAX_NODES, where_spent
from relay.rules.templates import Template, compile_template

BOMB = Path(__file__).resolve().parent.parent / "tests" / "rules" / "errors" / "alias_bomb.yaml"
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def run(repeats: int = 5) -> dict:
    """Milliseconds to refuse the alias bomb and to stop the template (best of
    ``repeats``), and the largest generated file's values against the budget."""
    text = BOMB.read_text()
    bomb_ms = _best(lambda: _refused(text), repeats)
    template = compile_template(LOOPS)
    template_ms = _best(lambda: _spent(template), repeats)
    largest = yaml.compose(ruleset_text(10_000), Loader=yaml.CSafeLoader)
    values = _values(largest)
    return {
        "alias_bomb_bytes": len(text.encode()),
        "alias_bomb_ms": bomb_ms,
        "template_loops_ms": template_ms,
        "largest_file_values": values,
        "max_values": MAX_NODES,
    }


def details(bg: dict) -> list[str]:
    """The lines of ``python -m bench``'s table below the targets."""
    return [
        f"budgets: the {bg['alias_bomb_bytes']}-byte alias bomb (9 ** 10 values expanded) "
        f"refused in {bg['alias_bomb_ms']:.2f} ms; two nested loops of 100,000 passes stopped "
        f"at the template budget's 100,000th step in {bg['template_loops_ms']:.0f} ms; the "
        f"10,000-route file of bench matching holds {bg['largest_file_values']:,} values of "
        f"the {bg['max_values']:,} a rules file may",
    ]


def _refused(text: str) -> None:
    try:
        load_rules_text(text, "bomb.yaml", env={})
    except RulesError as exc:
        assert "once aliases are expanded" in exc.errors[0], exc.errors
        return
    raise AssertionError("the alias bomb loaded")


def _spent(template: Template) -> None:
    try:
        template.render({}, "route", "destination")
    except TemplateBudgetError:
        return
    raise AssertionError("the template rendered")


def _values(node: yaml.Node) -> int:
    """The values ``node`` holds (found by halving the budget until it is spent)."""
    low, high = 0, MAX_NODES
    while low < high:
        middle = (low + high) // 2
        if where_spent(node, middle) is None:
            high = middle
        else:
            low = middle + 1
    return low


def _best(call: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
