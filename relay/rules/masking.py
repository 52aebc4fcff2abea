"""What relay never shows: the values of keys that name a secret, and values a rules file
took from the environment.

One rule says which keys hold secrets (:func:`is_secret_key`): the console's rules page and
the dry run's redaction (:func:`relay.actions.registry.redact`) both use it. One function
hides known values wherever they appear (:func:`hide`): the loader's error messages (and so
a failed reload, as logged and as ``/readyz`` and the console show it), the dry run and the
rules page use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from typing import Any

MASK = "****"
#: characters: a shorter value is not hidden (it would star every "1" or "on" around it)
MIN_HIDDEN = 4

#: words that make a key secret wherever they are in its name (``X-Auth-Token``,
#: ``client_secret``, ``X-Hub-Signature-256``)
_ANYWHERE = frozenset(
    "authorization authentication secret secrets password passwd passphrase token tokens "
    "cookie signature credential credentials apikey privatekey".split()
)
#: words that make a key secret as its last word (``X-Api-Key``, ``X-Custom-Auth``)
_LAST = frozenset({"key", "pass", "pwd", "auth", "sig"})
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")


def is_secret_key(name: str) -> bool:
    """True when the key ``name`` names a secret: a word of it is ``token``, ``secret``,
    ``password``, ``authorization``, ``cookie``, ``signature``, ``credentials`` …, or its
    last word is ``key``, ``auth`` or ``pass`` (``X-Api-Key``, ``X-Custom-Auth``); words
    are split at ``-``, ``_``, ``.``, spaces and camelCase, case aside."""
    words = [word for word in _SEPARATORS.split(_CAMEL.sub(r"\1 \2", name).lower()) if word]
    if not words:
        return False
    return words[-1] in _LAST or any(word in _ANYWHERE for word in words)


def hidden(values: Iterable[str]) -> tuple[str, ...]:
    """The forms of ``values`` to hide, longest first: each value of at least
    :data:`MIN_HIDDEN` characters, as it is and as ``repr`` and JSON write it inside quotes."""
    forms: set[str] = set()
    for value in values:
        if len(value) >= MIN_HIDDEN:
            forms.update((value, repr(value)[1:-1], json.dumps(value)[1:-1]))
            forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    return tuple(sorted(forms, key=lambda form: (-len(form), form)))


def hide(text: str, forms: Collection[str]) -> str:
    """``text`` with every one of ``forms`` (from :func:`hidden`) written as ``****``."""
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def hide_all(value: Any, forms: Collection[str]) -> Any:
    """``value`` (JSON-like data) with :func:`hide` applied to every string in it, keys too."""
    if not forms:
        return value
    if isinstance(value, str):
        return hide(value, forms)
    if isinstance(value, dict):
        return {hide_all(key, forms): hide_all(item, forms) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [hide_all(item, forms) for item in value]
    return value
