"""The loader's budget of values: aliases expanded, counted before anything is built."""

from __future__ import annotations

import pytest
import yaml

from bench.matching import ruleset_text
from relay.errors import RulesError
from relay.rules import load_rules, load_rules_text
from relay.rules.document import Problems, parse
from relay.rules.expansion import MAX_NODES, SCALAR_UNIT, where_spent
from relay.rules.reloader import RulesHolder

FILE = """\
version: 1
destinations: {trace: {type: log}}
words: &words [A, B, C]
routes:
  - {name: one, to: trace, match: {keyword: *words}}
  - {name: two, to: trace, match: {keyword: *words}}
"""
# the values once expanded: the top mapping (1) and its four values: version (1),
# destinations (3), words (4), routes (1 + 2 routes of 1 + name, to, match (1 + keyword 4))
VALUES = 1 + 1 + 3 + 4 + 1 + 2 * (1 + 1 + 1 + 1 + 4)


def test_every_alias_counts_what_it_repeats():
    node = yaml.compose(FILE)
    assert where_spent(node, VALUES) is None
    assert where_spent(node, VALUES - 1) == (4, ("routes",))


def test_a_file_over_the_budget_is_one_error_and_nothing_is_built():
    problems = Problems("rules.yaml")
    assert parse(FILE, {}, problems, budget=VALUES - 1) is None
    assert problems.messages() == [
        f"rules.yaml:4: routes: more than {VALUES - 1:,} values once aliases are expanded "
        "(the most a file holds)"
    ]


def test_a_long_string_counts_one_value_per_unit_of_its_length():
    text = f"a: &long {'x' * (3 * SCALAR_UNIT)}\nb: [*long, *long]\n"
    # the mapping (1), a (1 + 3), b (1 + 2 × 4)
    assert where_spent(yaml.compose(text), 14) is None
    assert where_spent(yaml.compose(text), 13) == (2, ("b",))


def test_a_recursive_alias_is_counted_once_and_reported_by_the_loader():
    text = "version: 1\nloop: &loop [*loop]\n"
    with pytest.raises(RulesError) as caught:
        load_rules_text(text, env={})
    assert "rules.yaml:2: loop[0]: recursive alias" in caught.value.errors


def test_the_largest_bench_file_holds_a_fifth_of_the_budget_at_most():
    node = yaml.compose(ruleset_text(10_000), Loader=yaml.CSafeLoader)
    assert where_spent(node, MAX_NODES // 5) is None


def test_a_hot_reload_to_an_alias_bomb_is_refused_and_the_rules_in_force_stay(tmp_path):
    from tests.rules.test_loader import ERRORS

    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\ndestinations: {trace: {type: log}}\nroutes: [{name: all, to: trace}]\n"
    )
    holder = RulesHolder(str(path), lambda file: load_rules(file, env={}))
    version = holder.current.version
    path.write_text((ERRORS / "alias_bomb.yaml").read_text())
    assert holder.check() is False
    assert holder.current.version == version
    assert holder.failure is not None
    assert holder.failure.errors == (
        f"{path}:9: lol.f: more than {MAX_NODES:,} values once aliases are expanded "
        "(the most a file holds)",
    )
