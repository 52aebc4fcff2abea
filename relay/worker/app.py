"""The worker's Celery application: relay's settings, one state store, the rules, and
the runtime routing and delivery run with."""

from __future__ import annotations

import logging
import math
from functools import cached_property
from typing import Any

from celery import Celery

from relay.events import Job
from relay.ops.broker import make_celery
from relay.ops.checks import rules_holder
from relay.rules import Ruleset
from relay.rules.reloader import RulesHolder
from relay.settings import Settings, load_settings
from relay.state import RedisError, Store, open_store
from relay.state.keys import deliver_member
from relay.worker.failover import PrimaryWatch
from relay.worker.ownership import Heartbeat, Holdings, new_node_id, task_id
from relay.worker.runtime import Runtime

log = logging.getLogger("relay.worker")


class RelayCelery(Celery):
    """A Celery app that knows relay's settings and owns one Redis state client."""

    settings: Settings

    @cached_property
    def node_id(self) -> str:
        """This worker node's id (made in the main process; pool children share it)."""
        return new_node_id()

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings, timeout=5.0, node=self.node_id)

    @cached_property
    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.store)

    @cached_property
    def holdings(self) -> Holdings:
        """The pending members this process works on now."""
        return Holdings()

    @cached_property
    def primary_watch(self) -> PrimaryWatch:
        return PrimaryWatch(self.store, self.runtime.interrupted)

    @cached_property
    def rules_holder(self) -> RulesHolder:
        """The rules this worker process routes and delivers by, reloaded when changed."""
        return rules_holder(self.settings, self.store)

    @property
    def rules(self) -> Ruleset:
        return self.rules_holder.current

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime(
            settings=self.settings,
            store=self.store,
            rules=self.rules_holder,
            schedule=self.schedule_delivery,
            max_hop=self.settings.visibility_timeout / 2,
            holdings=self.holdings,
        )

    def schedule_delivery(self, job: Job, countdown: float) -> None:
        if countdown > 0 and self.settings.amqp_quorum:
            # RabbitMQ's native delayed delivery (quorum queues) counts whole seconds
            countdown = math.ceil(countdown)
        try:
            self.send_task(
                "relay.deliver",
                args=[job],
                countdown=countdown or None,
                task_id=task_id(deliver_member(job["delivery_id"]), at_once="order" in job),
                argsrepr=f"({job['delivery_id']!r})",
                kwargsrepr="{}",
            )
        except Exception as exc:  # the broker away, or kombu's channel torn
            self.publish_later(deliver_member(job["delivery_id"]), exc)  # down by a failover

    def publish_later(self, member: str, exc: Exception) -> None:
        """A task that could not be published: its pending ``member`` is held by this node
        in Redis, and the primary watch publishes what this node holds but works on nowhere
        as soon as it can (``relay.worker.failover``)."""
        log.warning(
            "publishing %s failed (%s); published again once the broker answers", member, exc
        )
        try:
            self.store.pending.own(member)
        except RedisError:  # Redis away too: it is published again once overdue
            pass
        self.runtime.interrupted.set()


def make_worker_app(settings: Settings | None = None, **kwargs: Any) -> RelayCelery:
    settings = settings or load_settings()
    app = make_celery(settings, RelayCelery, include=["relay.worker.tasks"], **kwargs)
    assert isinstance(app, RelayCelery)
    app.settings = settings
    return app
