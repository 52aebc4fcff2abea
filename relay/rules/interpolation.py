"""``${VAR}`` references in a rules file's string values.

``${NAME}`` is the value of NAME in the environment, an error when it is unset or empty;
``${NAME:-default}`` is ``default`` when NAME is unset or empty; ``$${`` is a literal
``${``. A file that must not read the environment (a candidate) is expanded with
:data:`PLACEHOLDERS` instead: ``${NAME:-default}`` is then the default and ``${NAME}`` the
text ``<NAME>``, so that no value of the process's environment can reach what a candidate
shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class Placeholders:
    """Stands in for the environment where it must not be read (a candidate rules file):
    ``${NAME:-default}`` is the default, ``${NAME}`` the text ``<NAME>``."""

    def __repr__(self) -> str:
        return "PLACEHOLDERS"


PLACEHOLDERS = Placeholders()
Environment = Mapping[str, str] | Placeholders


def expand(text: str, env: Environment) -> tuple[str, list[str]]:
    """``text`` with ``${...}`` references replaced, and a message per bad reference."""
    problems: list[str] = []

    def replace(found: re.Match[str]) -> str:
        if found.group(0) == "$${":
            return "${"
        name = _NAME.fullmatch(found.group(1) or "") if found.group(1) is not None else None
        if name is None:
            problems.append(_bad_reference(found.group(0)))
            return found.group(0)
        if isinstance(env, Placeholders):
            return name.group(2) if name.group(2) is not None else f"<{name.group(1)}>"
        value = env.get(name.group(1)) or name.group(2)
        if value is None or (value == "" and name.group(2) is None):
            state = "not set" if name.group(1) not in env else "empty"
            problems.append(f"environment variable {name.group(1)} is {state}")
            return ""
        return value

    return _REFERENCE.sub(replace, text), problems


def referenced(text: str, env: Environment) -> list[str]:
    """The values the ``${...}`` references of ``text`` stand for (defaults included);
    none with :data:`PLACEHOLDERS`, which reads nothing."""
    values = []
    for found in _REFERENCE.finditer(text):
        name = _NAME.fullmatch(found.group(1)) if found.group(1) is not None else None
        if name is not None and not isinstance(env, Placeholders):
            values.append(env.get(name.group(1)) or name.group(2) or "")
    return values


def placeholder_names(text: str) -> tuple[str, ...]:
    """The names of the references of ``text`` that have no default (``<NAME>`` under
    :data:`PLACEHOLDERS`)."""
    found = (_NAME.fullmatch(match.group(1) or "") for match in _REFERENCE.finditer(text))
    return tuple(name.group(1) for name in found if name is not None and name.group(2) is None)


def _bad_reference(text: str) -> str:
    if text == "${":
        return "unterminated '${' (write $${ for a literal ${)"
    return f"bad variable reference {text!r} (expected ${{NAME}} or ${{NAME:-default}})"
