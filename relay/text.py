"""Text relay keeps and passes on is valid Unicode: a lone surrogate becomes U+FFFD.

JSON can carry a UTF-16 surrogate alone (``"\\ud800"``, or its bytes, which ``json``
decodes with ``surrogatepass``), but no UTF-8 encoder can: not Redis's keys, not SMTP,
not a receiver's JSON parser. The door (:func:`relay.parsing.decode`) and every template
output (:mod:`relay.rules.templates`) go through :func:`valid`, so nothing after them sees one.
"""

from __future__ import annotations

import re
from typing import TypeVar

T = TypeVar("T")

REPLACEMENT = "\ufffd"  #: what a lone surrogate becomes
#: bytes of a JSON document that may decode to a surrogate: a ``\\uD800``-``\\uDFFF``
#: escape, the UTF-8 form of one, or a NUL (a UTF-16 or UTF-32 document)
_MAY_HOLD = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]|\x00")


def may_hold_surrogates(document: bytes) -> bool:
    """False when the JSON text ``document`` cannot decode to a lone surrogate."""
    if b"\\u" not in document and b"\xed" not in document and b"\x00" not in document:
        return False  # three scans in C, a fraction of a regular expression's search
    return _MAY_HOLD.search(document) is not None


def valid_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (a high one followed by a low
    one is the character they stand for)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def valid(value: T) -> T:
    """``value`` (JSON-native data) with :func:`valid_text` applied to every string in
    it, keys included; the same object when none changes. RecursionError past Python's
    depth (the door refuses such nesting before)."""
    if isinstance(value, str):
        return valid_text(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        items = [(valid(key), valid(item)) for key, item in value.items()]
        if all(a is k and b is v for (a, b), (k, v) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)  # type: ignore[return-value]
    if isinstance(value, list):
        cleaned = [valid(item) for item in value]
        if all(a is b for a, b in zip(cleaned, value, strict=True)):
            return value
        return cleaned  # type: ignore[return-value]
    return value
