"""Text on the operator's terminal: aligned tables, one-line text, JSON, attempts.

What a record is shown as belongs to its command (``relay.cli.dlq``, ``relay.cli.events``,
``relay.cli.destinations``); the pieces they share are here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

#: widest "last error" column of a table
ERROR_WIDTH = 60
#: widest text an event brings into a heading (its keyword, its own time)
LABEL_WIDTH = 60


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``header`` over ``rows``, columns aligned; the last column is not padded."""
    every = [header, *rows]
    widths = [max(len(row[i]) for row in every) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*map(str.ljust, row[:-1], widths), row[-1]]).rstrip() for row in every
    )


def one_line(text: str) -> str:
    """Whitespace collapsed and control characters (a receiver's answer may hold terminal
    escapes) replaced, so that one record stays one line on the operator's screen."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def clip(text: str, width: int = ERROR_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters (the last one ``…``)."""
    text = one_line(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def echo_json(value: object) -> None:
    """``value`` as indented JSON on stdout (the shapes of the admin API)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def attempt_line(entry: dict[str, Any], with_time: bool = False) -> str:
    """One attempt of a delivery: outcome, status, latency, error (and when, if asked)."""
    parts = [f"attempt {entry.get('attempt')}: {entry.get('outcome')}"]
    if entry.get("status") is not None:
        parts.append(f"status {entry['status']}")
    if entry.get("latency") is not None:
        millis = entry["latency"] * 1000
        parts.append(f"{millis:.0f} ms" if millis >= 1 else "<1 ms")
    text = ", ".join(parts)
    if entry.get("error"):
        text += f" — {one_line(entry['error'])}"
    return f"{entry.get('at')}  {text}" if with_time else text
