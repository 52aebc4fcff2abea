"""The ``log`` destination: one line per event in the worker log, to try rules with no setup."""

from __future__ import annotations

import logging
import time
from typing import Any

from relay.actions.base import Outcome, render_text
from relay.events import Job
from relay.logs import escape
from relay.rules import LogDestination
from relay.settings import Settings

LOGGER = logging.getLogger("relay.deliver.log")


def prepare(destination: LogDestination, job: Job, settings: Settings) -> dict[str, Any]:
    """The line to write: the destination's ``text`` rendered for the job."""
    return {"line": render_text(destination.text, job)}


def send(
    destination: LogDestination, prepared: dict[str, Any], job: Job, settings: Settings
) -> Outcome:
    return send_log(prepared["line"])


def check(destination: LogDestination, settings: Settings) -> list[str]:
    """Nothing a log destination needs comes from the settings."""
    return []


def send_log(line: str, logger: logging.Logger = LOGGER) -> Outcome:
    """Write ``line`` at INFO as exactly one log line, whatever handler writes it: every
    control character (CR, LF, ESC, NEL, U+2028 …) is escaped; always ok."""
    started = time.monotonic()
    logger.info("%s", escape(line))
    return Outcome("ok", latency=time.monotonic() - started)
