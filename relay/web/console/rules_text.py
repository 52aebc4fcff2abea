"""The rules file as the console shows it: its text, with secrets written in it masked.

Values taken from the environment (``${VAR}``) are not in the text: the references are
shown as they are, but a ``${VAR:-default}`` default is masked where a secret would be.
Masked, line by line (block and flow mappings alike):

- a value under a key that names a secret (``token``, ``secret``, ``password``,
  ``Authorization``, ``X-Api-Key`` …), unless it is only ``${VAR}`` references and words
  such as ``Bearer`` around them;
- in every URL, as the dry run shows them (:func:`relay.actions.registry.redact`): the
  password and the query values; a Slack ``webhook_url``'s path;
- any value the rules in force took from the environment, wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from relay.actions.registry import MASK, redact

#: a key whose value is a secret: its last word
SECRET_KEY = re.compile(
    r"(?:^|[-_.])(?:authorization|token|secret|password|passwd|pass|key|api[-_]?key|"
    r"cookie|signature|credentials?)$",
    re.IGNORECASE,
)
#: ``key: value`` in a block or a flow mapping; the value ends at a comma, a brace or
#: bracket, or a comment
_PAIR = re.compile(
    r"(?P<key>[A-Za-z0-9_][A-Za-z0-9_.-]*)(?P<sep>\s*:\s+)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*'|(?:\$\{[^}]*\}|[^,{}\[\]#\s])(?:\$\{[^}]*\}|[^,{}\[\]#])*?)"
    r"(?=\s*(?:[,}\]]|\s#|$))"
)
_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'{},]+")


def redacted(text: str, interpolated: Collection[str] = ()) -> str:
    """``text`` (a rules file) fit to show."""
    hidden = sorted((value for value in interpolated if len(value) >= 4), key=len, reverse=True)
    lines = []
    for line in text.splitlines():
        line = _PAIR.sub(_masked_pair, line)
        for value in hidden:
            line = line.replace(value, MASK)
        lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _masked_pair(match: re.Match[str]) -> str:
    key, value = match.group("key"), match.group("value")
    if key.lower() == "webhook_url":
        shown = _references_only(value) or _URL.sub(_webhook_path, value)
    elif SECRET_KEY.search(key):
        shown = _references_only(value) or _quoted(value, MASK)
    else:
        shown = _URL.sub(_url, value)
    return f"{key}{match.group('sep')}{shown}"


def _references_only(value: str) -> str | None:
    """``value`` with the references' defaults masked, when what is left around the
    references is at most a word (``Bearer ${TOKEN}``); None when it has a literal secret."""
    if not _REFERENCE.search(value):
        return None
    rest = _REFERENCE.sub("", value.strip("\"'")).split()
    if len(rest) > 1 or any(len(word) > 12 for word in rest):
        return None
    return _REFERENCE.sub(_masked_default, value)


def _masked_default(match: re.Match[str]) -> str:
    if match.group("default") is None:
        return match.group()
    return "${" + match.group("name") + ":-" + (MASK if match.group("default") else "") + "}"


def _url(match: re.Match[str]) -> str:
    return str(redact({"url": match.group()})["url"])


def _webhook_path(match: re.Match[str]) -> str:
    return str(redact({"webhook_url": match.group()})["webhook_url"])


def _quoted(value: str, replacement: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[0] + replacement + value[0]
    return replacement
