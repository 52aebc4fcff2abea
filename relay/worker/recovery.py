"""Resuming at once what a stopped run left, when this worker knows it is the only one.

Under ``relay up`` the data-dir lock proves that no other process consumes from the
embedded Redis (``RELAY_SOLE_WORKER`` is set for its worker). So at start, before taking
anything new, the worker:

- gives back to their queues the task messages the last run had taken and not
  acknowledged (kombu's Redis transport would wait for the visibility timeout);
- publishes again the work every other worker node held (they are all gone).

Tasks are idempotent: a message restored here and also published again is dropped once.
"""

from __future__ import annotations

import logging

from celery import Celery

from relay.state import Store
from relay.worker import sweeper

log = logging.getLogger("relay.worker")


def restore_unacked(celery: Celery) -> int:
    """Give every unacknowledged message back to its queue (Redis brokers); how many."""
    with celery.connection_for_write() as connection:
        channel = connection.default_channel
        key = getattr(channel, "unacked_key", None)
        if key is None:  # not the Redis transport: the broker redelivers by itself
            return 0
        client = channel.client
        tags = client.hkeys(key)
        for tag in tags:
            channel.qos.restore_by_tag(tag, client=client)
        return len(tags)


def resume(celery: Celery, store: Store, poison_after: int = 3) -> None:
    restored = restore_unacked(celery)
    taken = sweeper.sweep_once(celery, store, sole=True, poison_after=poison_after)
    if restored or taken:
        log.warning(
            "resumed the last run's work: %d task messages given back, %d published again",
            restored,
            taken,
        )
