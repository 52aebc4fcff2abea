"""Celery tasks: thin adapters over ``relay.worker.routing`` and ``relay.worker.delivery``.

``relay.route`` carries an event that a worker took over or a replay sent again (accepted
events are routed by the intake, ``relay.worker.intake``, with no task); ``relay.deliver``
carries a retry, a replay, or a delivery taken over.

A failure of Redis while a task runs (unreachable, a timeout, a failover, out of memory:
``relay.state.is_infrastructure``) gives the message back to the queue after a pause
instead of acknowledging it: the work is retried, not lost. Any other error would only
repeat: it fails the task, whose work stays in the pending outbox (a routing that cannot be
recorded is dead-lettered as ``unroutable`` by ``relay.worker.routing`` itself).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.exceptions import Reject

from relay.events import Event, Job
from relay.state import is_infrastructure
from relay.worker import delivery, routing

#: seconds to wait before giving a message back when Redis failed (avoids a hot loop)
REQUEUE_PAUSE = 1.0


def _requeue_on_redis_error(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(self: Any, *args: Any) -> Any:
        try:
            return func(self, *args)
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            time.sleep(REQUEUE_PAUSE)
            raise Reject(f"redis: {exc}", requeue=True) from exc

    return wrapper


@shared_task(name="relay.route", bind=True)
@_requeue_on_redis_error
def route(self: Any, event: Event, trace: dict[str, str] | None = None) -> int:
    """Route the event and run its deliveries' first attempts (``trace``: the W3C trace
    context it was accepted or replayed in, while traces are on)."""
    return len(routing.route_event(self.app.runtime, event, trace))


@shared_task(name="relay.deliver", bind=True)
@_requeue_on_redis_error
def deliver(self: Any, job: Job) -> str:
    """One attempt at one (event, destination) delivery, or a wait before it."""
    return delivery.deliver_job(self.app.runtime, job)
