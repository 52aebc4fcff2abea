"""Publishes again the tasks that stay overdue in the pending outbox (``store.Pending``).

One thread in each worker's main process wakes every ``interval`` seconds; a short Redis
lock lets one worker sweep at a time. Only when the inbox and both queues are empty: a
task waiting in a long queue is not lost, just late, and must not be published twice.
"""

from __future__ import annotations

import logging
import threading

from kombu.exceptions import ChannelError

from relay.worker.app import DELIVER_QUEUE, ROUTE_QUEUE

log = logging.getLogger("relay.sweeper")
LOCK_KEY = "relay:sweeper:lock"


def queues_empty(celery) -> bool:
    with celery.connection_for_read() as connection:
        return all(_queue_size(connection, name) == 0 for name in (ROUTE_QUEUE, DELIVER_QUEUE))


def _queue_size(connection, name: str) -> int:
    with connection.channel() as channel:  # a failed passive declare closes an AMQP channel
        try:
            return channel.queue_declare(queue=name, passive=True).message_count
        except ChannelError:  # the Redis transport: an empty queue has no key
            return 0


def sweep_once(celery, store, interval: float) -> int:
    """Publish overdue tasks again; returns how many."""
    if not store.redis.set(LOCK_KEY, "1", nx=True, px=max(int(interval * 1000), 100)):
        return 0
    if store.pending.count() == 0 or store.inbox_size() or not queues_empty(celery):
        return 0
    overdue = store.pending.overdue()
    for member, spec in overdue:
        celery.send_task(spec["task"], args=spec["args"])
        log.warning("republished %s: overdue and not in any queue (lost by the broker?)", member)
    return len(overdue)


def start(celery, store, interval: float) -> threading.Event:
    """Run sweeps in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                sweep_once(celery, store, interval)
            except Exception as exc:  # noqa: BLE001 - keep sweeping; say why not
                log.warning("sweep skipped: %s", exc)

    threading.Thread(target=loop, name="relay-sweeper", daemon=True).start()
    return stop
