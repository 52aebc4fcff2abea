"""Hands accepted events from the Redis inbox to Celery as ``relay.route`` tasks.

The web process answers 200 once an event is in Redis (``Store.accept``: one round trip),
so publishing to the broker is off the request path. Each worker's main process runs one
pump thread: it takes up to ``BATCH`` ids at a time (BRPOP, then RPOP), and publishes
their stored routing tasks. An id popped by a pump that dies before publishing is not
lost: its routing task stays in the pending outbox, and the sweeper publishes it.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("relay.pump")

BATCH = 100  #: ids taken from the inbox at a time
WAIT = 1.0  #: seconds a BRPOP waits, so the thread notices a stop soon


def pump_once(store, celery, timeout: float = WAIT) -> int:
    """Move what the inbox holds now (up to BATCH) to Celery; returns how many."""
    specs = store.take_inbox(BATCH, timeout)
    for spec in specs:
        event = spec["args"][0]
        celery.send_task(
            spec["task"], args=spec["args"], argsrepr=f"({event['id']!r})", kwargsrepr="{}"
        )
    return len(specs)


def start(store, celery) -> threading.Event:
    """Run the pump in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                pump_once(store, celery)
            except Exception as exc:  # noqa: BLE001 - Redis or the broker away: wait, retry
                log.warning("pump paused: %s", exc)
                stop.wait(1.0)

    threading.Thread(target=loop, name="relay-pump", daemon=True).start()
    return stop
