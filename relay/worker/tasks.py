"""Celery tasks: thin adapters over ``relay.worker.delivery``.

A Redis error while a task runs (state store unreachable) gives the message back to the
queue after a pause instead of acknowledging it: the event is retried, not lost.
"""

from __future__ import annotations

import functools
import time

from celery import shared_task
from celery.exceptions import Reject
from redis import RedisError

from relay.worker import delivery

#: seconds to wait before giving a message back when Redis failed (avoids a hot loop)
REQUEUE_PAUSE = 1.0


def _requeue_on_redis_error(func):
    @functools.wraps(func)
    def wrapper(self, *args):
        try:
            return func(self, *args)
        except RedisError as exc:
            time.sleep(REQUEUE_PAUSE)
            raise Reject(f"redis: {exc}", requeue=True) from exc

    return wrapper


@shared_task(name="relay.route", bind=True)
@_requeue_on_redis_error
def route(self, event: dict) -> int:
    """Match the event to routes and schedule one delivery per destination."""
    return len(delivery.route_event(self.app.runtime, event))


@shared_task(name="relay.deliver", bind=True)
@_requeue_on_redis_error
def deliver(self, job: dict) -> str:
    """One attempt at one (event, destination) delivery, or a wait before it."""
    return delivery.deliver_job(self.app.runtime, job)
