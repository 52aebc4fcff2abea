"""How conditions read and compare event fields (README: Events; config/README.md: Conditions).

- A missing field or ``None`` matches nothing except ``exists: false`` and ``not``.
- Strings and numbers compare as text (``code: 7500`` matches ``"7500"``; ``7500.0`` is
  ``"7500"``); booleans compare only with booleans (``final: true``).
- ``kind``, ``keyword`` and ``channel`` compare case-insensitively; ``status`` also ignores
  ``-``, ``_`` and spaces (``undelivered`` matches ``Un-Delivered``). This applies to those
  top-level fields only (not to ``raw.status``).
- ``callback.x`` and ``raw.a.b`` walk nested mappings; a numeric segment indexes a list.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from functools import cache
from typing import Any, NamedTuple

from relay.rules.suggest import did_you_mean

Event = Mapping[str, Any]

#: the top-level event fields (README: Events) that a condition may name
EVENT_FIELDS = frozenset(
    "id kind source received_at status final code code_description description "
    "additional_info destination channel timestamp transid subtid correlation_id "
    "callback_data callback callback_error tid user_id network_id sender recipient text "
    "keyword raw sender_opted_out opt_out_ambiguous last_status last_code first_received_at "
    "age_seconds".split()
)
#: fields whose inside a dotted path may reach (``callback.campaign``, ``raw.a.0.b``)
NESTED_FIELDS = frozenset({"callback", "raw"})

NOTHING: Hashable = object()  # the canonical form of a value that no rule value equals
_STATUS_NOISE = str.maketrans("", "", "-_ ")


def _same(text: str) -> str:
    return text


def _casefold(text: str) -> str:
    return text.casefold()


def _status(text: str) -> str:
    return text.casefold().translate(_STATUS_NOISE)


_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "kind": _casefold,
    "keyword": _casefold,
    "channel": _casefold,
    "status": _status,
    "last_status": _status,
}


def as_text(value: Any) -> str | None:
    """A string, or a number spelled as text (``7500.0`` → ``"7500"``); else ``None``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def as_number(value: Any) -> float | None:
    """A number, or a string holding one, as float; else ``None`` (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


class Field(NamedTuple):
    """How to read and compare one field path."""

    path: str
    get: Callable[[Event], Any]
    norm: Callable[[str], str]
    canon: Callable[[Any], Hashable]

    @property
    def ignores_case(self) -> bool:
        return self.norm is not _same

    def key(self, event: Event) -> Hashable:
        """The event's value of this field in canonical form (what equality compares)."""
        return self.canon(self.get(event))


def _canonical(norm: Callable[[str], str]) -> Callable[[Any], Hashable]:
    def canon(value: Any) -> Hashable:
        if isinstance(value, str):
            return norm(value)
        if isinstance(value, bool):
            return value
        text = as_text(value)
        return NOTHING if text is None else norm(text)

    return canon


def _getter(path: str) -> Callable[[Event], Any]:
    head, *rest = path.split(".")
    if not rest:
        return lambda event: event.get(head)

    def get(event: Event) -> Any:
        value: Any = event.get(head)
        for part in rest:
            if isinstance(value, Mapping):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return None
        return value

    return get


@cache
def field(path: str) -> Field:
    """The (cached) reader and comparator of a field path such as ``status`` or ``raw.a.0``."""
    norm = _NORMALIZERS.get(path, _same)
    return Field(path, _getter(path), norm, _canonical(norm))


def order_value(path: str, event: Event) -> str | None:
    """The event's value of the field ``path`` as an ordering key (``ordered_by``): a
    string or a number as text, normalised as conditions compare it; ``None`` for a
    missing, empty or other value (such an event is not ordered)."""
    reader = field(path)
    text = as_text(reader.get(event))
    return reader.norm(text) if text else None


def field_problem(path: str) -> str | None:
    """Why ``path`` is not a field a condition may name, or ``None`` when it is one."""
    head, _, rest = path.partition(".")
    if head not in EVENT_FIELDS:
        return f"unknown field {head!r}{did_you_mean(head, EVENT_FIELDS)}"
    if rest and head not in NESTED_FIELDS:
        return f"field {head!r} has no sub-fields (only {' and '.join(sorted(NESTED_FIELDS))})"
    if "" in path.split("."):
        return f"empty segment in field path {path!r}"
    return None
