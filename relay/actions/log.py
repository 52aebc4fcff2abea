"""The ``log`` destination: one line per event in the worker log, to try rules with no setup."""

from __future__ import annotations

import logging
import time

from relay.actions.base import Outcome

LOGGER = logging.getLogger("relay.deliver.log")


def send_log(line: str, logger: logging.Logger = LOGGER) -> Outcome:
    """Write ``line`` at INFO as exactly one log line (CR and LF are escaped); always ok."""
    started = time.monotonic()
    logger.info("%s", line.replace("\r", "\\r").replace("\n", "\\n"))
    return Outcome("ok", latency=time.monotonic() - started)
