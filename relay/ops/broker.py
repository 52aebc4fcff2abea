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
  on one host with either broker, whatever their node names;
- with ``RELAY_REDIS_URL`` naming Sentinels and no ``RELAY_BROKER_URL``, the broker is the
  same primary, reached through kombu's ``sentinel://`` transport (``master_name``);
- with ``RELAY_AMQP_QUORUM=1``, relay's RabbitMQ queues are quorum queues (replicated
  across a RabbitMQ cluster).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.exceptions import ChannelError

from relay.redis_url import SentinelURL, is_sentinel, parse_sentinel_url
from relay.settings import Settings

ROUTE_QUEUE = "relay.route"
DELIVER_QUEUE = "relay.deliver"
QUEUES = (ROUTE_QUEUE, DELIVER_QUEUE)


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
    url = settings.effective_broker_url
    transport_options: dict[str, Any] = {
        "visibility_timeout": int(settings.visibility_timeout),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
    sentinel = parse_sentinel_url(url) if url and is_sentinel(url) else None
    if sentinel is not None:
        url = kombu_sentinel_url(sentinel)
        transport_options |= _sentinel_options(sentinel, settings, timeout)
    return {
        "broker_url": url,
        "broker_transport": _transport(url),
        "broker_use_ssl": {"ssl_cert_reqs": "required"} if sentinel and sentinel.tls else False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": timeout,
        "broker_transport_options": transport_options,
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
        "task_queues": [_queue(name, settings.amqp_quorum) for name in QUEUES],
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


def kombu_sentinel_url(address: SentinelURL) -> str:
    """kombu's form of the Sentinels: ``sentinel://[:pw@]host:port/db;sentinel://…``."""
    userinfo = ""
    if address.password:
        userinfo = f"{quote(address.username or '', safe='')}:{quote(address.password, safe='')}@"
    return ";".join(
        f"sentinel://{userinfo}{_host(host)}:{port}/{address.db}"
        for host, port in address.sentinels
    )


def _sentinel_options(address: SentinelURL, settings: Settings, timeout: float) -> dict[str, Any]:
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if settings.redis_sentinel_password:
        sentinel_kwargs["password"] = settings.redis_sentinel_password
    if address.tls:
        sentinel_kwargs["ssl"] = True
    return {"master_name": address.service, "sentinel_kwargs": sentinel_kwargs}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _transport(url: str | None) -> str | None:
    """relay's Redis transports (one client per channel, see relay.worker.transport) for
    redis://, rediss:// and sentinel:// brokers; the URL's own transport otherwise."""
    scheme = url.split("://", 1)[0] if url else ""
    if scheme in ("redis", "rediss"):
        return "relay.worker.transport:Transport"
    if scheme == "sentinel":
        return "relay.worker.transport:SentinelTransport"
    return None


def _queue(name: str, quorum: bool = False) -> Queue:
    """A queue behind an exchange of its name. With ``quorum``, a RabbitMQ quorum queue
    behind a topic exchange: quorum queues have no global prefetch, so Celery sends
    countdown tasks (retries) through RabbitMQ's native delayed delivery, which routes
    them back by topic (a direct exchange would have the worker hold them instead)."""
    if not quorum:
        return Queue(name, Exchange(name, type="direct"), routing_key=name)
    return Queue(
        name,
        Exchange(name, type="topic"),
        routing_key=name,
        queue_arguments={"x-queue-type": "quorum"},
    )
