"""The Celery application, configured for at-least-once delivery.

- late acknowledgement and reject-on-worker-lost: a task is acknowledged only after it
  ran, so a worker killed mid-task gives it back to the queue;
- prefetch 1: a worker holds no more unstarted tasks than it can run;
- broker socket timeouts and a bounded publish retry: the web process answers 503 within
  its budget instead of hanging when the broker is gone;
- a visibility timeout (``RELAY_VISIBILITY_TIMEOUT``) after which the Redis transport
  redelivers a task that was taken but never acknowledged, swept for every second.
  Retry waits longer than half of it are split into hops (see ``relay.worker.tasks``), so a
  scheduled retry is never redelivered while it waits.
"""

from __future__ import annotations

from functools import cached_property

from celery import Celery
from kombu import Exchange, Queue

from relay.settings import Settings, load_settings

ROUTE_QUEUE = "relay.route"
DELIVER_QUEUE = "relay.deliver"


class RelayCelery(Celery):
    """A Celery app that knows relay's settings and owns one Redis state client."""

    def __init__(self, settings: Settings, **kwargs) -> None:
        self.settings = settings
        super().__init__("relay", **kwargs)

    @cached_property
    def store(self):
        from relay.state.store import Store, connect

        client = connect(self.settings.require_redis(), timeout=5.0)
        return Store(
            client,
            self.settings.history_ttl,
            self.settings.dedupe_ttl,
            grace=pending_grace(self.settings),
        )

    @cached_property
    def rules_holder(self):
        """The rules this worker process routes and delivers by, reloaded when changed."""
        return rules_holder(self.settings)

    @property
    def rules(self):
        return self.rules_holder.current

    @cached_property
    def runtime(self):
        from relay.worker.delivery import Runtime
        from relay.actions.replies import ReplyState

        return Runtime(
            settings=self.settings,
            store=self.store,
            replies=ReplyState(self.store.redis),
            rules=self.rules_holder,
            schedule=self.schedule_delivery,
            max_hop=self.settings.visibility_timeout / 2,
        )

    def schedule_delivery(self, job: dict, countdown: float) -> None:
        self.send_task(
            "relay.deliver",
            args=[job],
            countdown=countdown or None,
            argsrepr=f"({job['delivery_id']!r})",
            kwargsrepr="{}",
        )


def rules_holder(settings: Settings):
    """A RulesHolder for ``settings.rules_path`` with the settings checks and metrics."""
    from relay import metrics
    from relay.ops.checks import load_ruleset
    from relay.rules.reloader import RulesHolder

    return RulesHolder(
        settings.rules_path,
        lambda path: load_ruleset(settings, path),
        on_change=metrics.rules_changed,
    )


def pending_grace(settings: Settings) -> float:
    """How long past its due time a task may stay unsettled before it counts as lost:
    twice the visibility timeout covers a message held unacknowledged and redelivered."""
    return 2 * settings.visibility_timeout


def make_celery(settings: Settings | None = None) -> RelayCelery:
    settings = settings or load_settings()
    app = RelayCelery(settings, include=["relay.worker.tasks"])
    app.conf.update(celery_config(settings))
    return app


def celery_config(settings: Settings) -> dict:
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
