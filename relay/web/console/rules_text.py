"""The rules file as the console shows it: its text, with the secrets written in it masked.

The text is parsed as the loader parses it (:func:`relay.rules.document.parse`, without the
environment) and each value masked in place, from the span its mark keeps: quoted keys,
block scalars (``secret: >-`` and the text below), a value on the next line, a value
holding ``#``, ``,``, ``]`` or ``}`` — each is masked whole, and the lines keep their
numbers. Masked:

- every value under a key that names a secret (:func:`relay.rules.masking.is_secret_key`:
  ``token``, ``secret``, ``password``, ``Authorization``, ``X-Api-Key``, ``X-Custom-Auth``,
  ``*-Token`` …), or inside a mapping or list such a key holds — unless it is only
  ``${VAR}`` references and at most a word such as ``Bearer`` around them: those are shown
  as written, a ``${VAR:-default}`` default masked;
- in every URL, as the dry run shows them (:func:`relay.actions.registry.redact`): the
  password and the query values; a Slack ``webhook_url``'s path;
- in a comment, what follows a key that names a secret, and URLs as above;
- any value the rules in force took from the environment, wherever it appears.

A text that does not parse (or that the loader would refuse for its duplicate keys) is not
shown at all: without its structure, what is a secret cannot be told.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection

from relay.actions.registry import redact
from relay.rules.document import Path, Problems, parse
from relay.rules.interpolation import PLACEHOLDERS
from relay.rules.masking import MASK, hidden, hide, is_secret_key

_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'{},]+")
_PROPERTIES = re.compile(r"(?:[&!]\S*\s+)*")  #: a scalar's anchor and tag
_LINE_TEXT = re.compile(r"(?m)^([ \t]*)\S(?:.*\S)?")
_COMMENT = re.compile(r"(?:^|(?<=\s))#[^\n]*")
_COMMENT_KEY = re.compile(r"([\"']?)([A-Za-z0-9_][\w.-]*)\1\s*:(?=\s|$)")


def redacted(text: str, interpolated: Collection[str] = ()) -> str | None:
    """``text`` (a rules file) fit to show, or None when it does not parse."""
    return _redacted(text, frozenset(interpolated))


@functools.lru_cache(maxsize=4)  # the page is shown again and again for the same file
def _redacted(text: str, interpolated: frozenset[str]) -> str | None:
    problems = Problems("")
    doc = parse(text, PLACEHOLDERS, problems)
    if doc is None or problems:
        return None
    # every scalar, as shown (an alias's anchor is masked if any use of it is secret);
    # what lies between them is structure: keys, punctuation, comments
    shown: dict[int, tuple[int, bool, str]] = {}  # start → end, secret, text shown
    for path, mark in doc.marks.items():
        if mark.span is None or shown.get(mark.span.start, (0, False))[1]:
            continue
        start, end = mark.span.start, mark.span.end
        secret = _secret(path)
        shown[start] = (end, secret, _scalar(text[start:end], path, secret))
    parts, at = [], 0
    for start in sorted(shown):
        end, _, value = shown[start]
        parts += [_COMMENT.sub(_comment, text[at:start]), value]
        at = end
    parts.append(_COMMENT.sub(_comment, text[at:]))
    return hide("".join(parts), hidden(interpolated))


def _secret(path: Path) -> bool:
    """Whether a key on ``path`` names a secret (a destination's own name aside)."""
    return any(
        isinstance(part, str) and is_secret_key(part)
        for i, part in enumerate(path)
        if not (i == 1 and path[0] == "destinations")
    )


def _scalar(source: str, path: Path, secret: bool) -> str:
    """How the scalar written ``source`` is shown."""
    prefix = _PROPERTIES.match(source)
    head = source[: prefix.end()] if prefix else ""
    body = source[len(head) :]
    quote = body[0] if body[:1] in ("'", '"') and len(body) > 1 and body[-1] == body[0] else ""
    if body[:1] in ("|", ">"):
        header, _, content = body.partition("\n")
        quote, head, body = "", head + header + "\n", content
    inner = body[len(quote) : len(body) - len(quote)]
    webhook = bool(path) and str(path[-1]).lower() == "webhook_url"
    if secret or webhook:
        references = _references_only(inner)
        if references is not None:
            return head + quote + references + quote
    if secret:
        return head + quote + _LINE_TEXT.sub(lambda line: line.group(1) + MASK, inner) + quote
    return _URL.sub(_webhook_path if webhook else _url, source)


def _comment(found: re.Match[str]) -> str:
    """A comment with what follows a secret key masked, and its URLs as values' are."""
    comment = found.group()
    for key in _COMMENT_KEY.finditer(comment):
        name, rest = key.group(2), comment[key.end() :]
        if is_secret_key(name) or name.lower() == "webhook_url":
            references = _references_only(rest.strip())
            if references is not None:
                return comment[: key.end()] + " " + references
            if is_secret_key(name):
                return comment[: key.end()] + " " + MASK
            return comment[: key.end()] + _URL.sub(_webhook_path, rest)
    return _URL.sub(_url, comment)


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
