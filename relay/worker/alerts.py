"""relay's own alerts: :func:`emit` records one for the notifications that want it.

Called on a dead letter (:mod:`relay.worker.delivery`) and when a destination's circuit
opens or closes. Never raises: an alert that cannot be recorded is logged and dropped, so
it never disturbs the delivery that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from relay.worker.runtime import Runtime

log = logging.getLogger("relay.alerts")


def emit(
    runtime: Runtime, kind: str, labels: Mapping[str, str], details: Mapping[str, Any] | None = None
) -> None:
    """Record an alert of ``kind`` (``dead_letter``, ``circuit_open``, ``circuit_closed``).

    ``labels``: ``destination`` and, for a dead letter, ``route`` (``kind`` is added);
    ``details``: what an example shows (``event_id``, ``delivery_id``, ``error`` …).
    """
    log.info("alert %s %s", kind, dict(labels))
