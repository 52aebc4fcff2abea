"""Candidate routes for an event, found without testing every route.

Routes whose ``match`` compares a field by equality (``kind: x``, ``code: [a, b]``,
``{equals: x}``, ``{in: [...]}``) sit in buckets by that field's canonical values; the rest
are always candidates. The result is identical to testing every route in order (the tests
check this against the unindexed form on generated rulesets).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from relay.rules.fields import Event
from relay.rules.fields import field as field_access
from relay.rules.matcher import Condition


class Index:
    """The routes an event may match, in route order, found without testing them all.

    A route with an equality condition on a field sits in buckets by that field's values
    (the field with the most distinct values in the ruleset is preferred); the others are
    always candidates. With ``indexed=False`` every route is a candidate (the reference).
    """

    def __init__(self, conditions: Sequence[Condition], indexed: bool = True) -> None:
        spread = _spread(conditions)
        buckets: dict[str, dict[Hashable, list[int]]] = {}
        always: list[int] = []
        for position, condition in enumerate(conditions):
            chosen = _pick(condition.keys, spread) if indexed else None
            if chosen is None:
                always.append(position)
                continue
            table = buckets.setdefault(chosen, {})
            for key in condition.keys[chosen]:
                table.setdefault(key, []).append(position)
        self._always = tuple(always)
        self._lookups = tuple((field_access(name).key, table) for name, table in buckets.items())

    def candidates(self, event: Event) -> list[int]:
        """Positions of the routes that may match ``event``, ascending."""
        found = list(self._always)
        sources = 1 if found else 0
        for key, table in self._lookups:
            hit = table.get(key(event))
            if hit:
                found += hit
                sources += 1
        if sources > 1:
            found.sort()
        return found


def _spread(conditions: Sequence[Condition]) -> dict[str, int]:
    values: dict[str, set[Hashable]] = {}
    for condition in conditions:
        for name, keys in condition.keys.items():
            values.setdefault(name, set()).update(keys)
    return {name: len(keys) for name, keys in values.items()}


def _pick(keys: Mapping[str, frozenset[Hashable]], spread: Mapping[str, int]) -> str | None:
    if not keys:
        return None
    return max(keys, key=lambda name: (spread[name], -len(keys[name])))
