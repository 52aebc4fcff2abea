"""The Celery application as every process sees it: configured for at-least-once delivery.

The web process and the commands use it to publish (replays); the worker extends it
(``relay.worker.app``) with what routing and delivery need.

- late acknowledgement and reject-on-worker-lost: a task is acknowledged only after it
  ran, so a worker killed mid-task gives it back to the queue;
- prefetch 1: a worker holds no more unstarted tasks than it can run;
- broker socket timeouts and a bounded publish retry: a caller gets an error within its
  budget instead of hanging when the broker is gone;
- a visibility timeout (``RELAY_VISIBILITY_TIMEOUT``) after which the Redis transport
  redelivers a task that was taken but never acknowledged. Retry waits longer than half
  of it are split into hops (``relay.worker.delivery``), so a scheduled retry is never
  redelivered while it waits;
- no remote control (no ``celery@host.celery.pidbox`` queue): any number of workers run
  on one host with either broker, whatever their node names.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.exceptions import ChannelError

from relay.settings import Settings

ROUTE_QUEUE = "relay.route"
DELIVER_QUEUE = "relay.deliver"


def make_celery(settings: Settings, cls: type[Celery] = Celery, **kwargs: Any) -> Celery:
    """A Celery app of class ``cls`` configured for ``settings``."""
    app = cls("relay", **kwargs)
    app.conf.update(celery_config(settings))
    return app


def queue_sizes(celery: Celery) -> list[tuple[str, int]]:
    """Messages waiting in each of relay's queues."""
    with celery.connection_for_read() as connection:
        return [(name, _queue_size(connection, name)) for name in (ROUTE_QUEUE, DELIVER_QUEUE)]


def _queue_size(connection: Any, name: str) -> int:
    with connection.channel() as channel:  # a failed passive declare closes an AMQP channel
        try:
            return int(channel.queue_declare(queue=name, passive=True).message_count)
        except ChannelError:  # the Redis transport: an empty queue has no key
            return 0


def celery_config(settings: Settings) -> dict[str, Any]:
    timeout = settings.enqueue_timeout
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport": _transport(settings.effective_broker_url),
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": timeout,
        "broker_transport_options": {
            "visibility_timeout": int(settings.visibility_timeout),
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        # True crashes the worker on reconnection (celery#9250); a task running through a
        # connection loss is redelivered after the visibility timeout instead
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "worker_enable_remote_control": False,
        "task_default_queue": ROUTE_QUEUE,
        "task_queues": [_queue(ROUTE_QUEUE), _queue(DELIVER_QUEUE)],
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.worker_concurrency,
        "task_routes": {
            "relay.route": {"queue": ROUTE_QUEUE},
            "relay.deliver": {"queue": DELIVER_QUEUE},
        },
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        "enable_utc": True,
    }


def _transport(url: str | None) -> str | None:
    """relay's Redis transport (one client per channel, see relay.worker.transport) for
    redis:// and rediss:// brokers; the URL's own transport otherwise."""
    if url and url.split("://", 1)[0] in ("redis", "rediss"):
        return "relay.worker.transport:Transport"
    return None


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)
