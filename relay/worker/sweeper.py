"""Publishes again the work nobody holds any more (``relay.state.pending``).

One thread in each worker's main process wakes every few seconds; a short Redis lock lets
one worker sweep at a time. Two kinds of work are published again:

- what a dead worker node held (no heartbeat for ``NODE_TTL`` seconds), at once: tasks
  are idempotent, so a copy the broker also redelivers later is dropped; and the
  notification messages it claimed and never sent, back into their groups;
- what nobody holds and stays overdue ``grace`` seconds past its due time, only while
  the inbox and both queues are empty: a task waiting in a long queue is late, not lost.

It also fires the deadlines of messages whose final receipt did not come in time
(``relay.worker.deadlines``), and puts back those a dead node claimed and did not fire.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery import Celery

from relay import metrics
from relay.ops.broker import queue_sizes
from relay.state import Store
from relay.state.keys import deliver_member
from relay.state.pending import Spec
from relay.worker import deadlines
from relay.worker.ownership import task_id

log = logging.getLogger("relay.sweeper")

#: seconds between sweeps
INTERVAL = 2.0


def publish(celery: Celery, store: Store, member: str, spec: Spec) -> None:
    """Publish the pending ``member``'s task (a delivery at its live generation)."""
    spec = store.live_task(spec)
    ordered = spec["task"] == "relay.deliver" and "order" in spec["args"][0]
    celery.send_task(spec["task"], args=spec["args"], task_id=task_id(member, at_once=ordered))


def republish(
    celery: Celery, store: Store, member: str, spec: Spec | None, poison_after: int
) -> bool:
    """Publish ``member`` again, unless it was published again ``poison_after`` times
    already (or does not decode): then it is poison, and goes to the dead letters."""
    times = store.pending.count_republish(member, store.history_ttl)
    if spec is not None and times <= poison_after:
        publish(celery, store, member, spec)
        return True
    reason = (
        f"poison: published again {times - 1} times and never settled"
        if spec is not None
        else "poison: its task does not decode"
    )
    for job in store.poisoned(member, spec, reason):  # ordered deliveries whose turn came
        publish(
            celery,
            store,
            deliver_member(job["delivery_id"]),
            {"task": "relay.deliver", "args": [job]},
        )
    metrics.m().poisoned.inc()
    log.error("%s moved to the dead letters: %s", member, reason)
    return False


def sweep_once(
    celery: Celery,
    store: Store,
    interval: float = INTERVAL,
    sole: bool = False,
    poison_after: int = 3,
    take_over: bool = True,
    orders_of: deadlines.OrdersOf | None = None,
) -> int:
    """Publish again what dead nodes held and what is overdue, and fire the messages'
    deadlines that passed (``orders_of``: an event's ordering keys, from the rules in
    force); returns how many were published again.
    ``sole``: this worker knows it is the only one (``relay up``): every other node is
    dead. ``take_over`` False: judge no node dead now (just after a failover, when live
    nodes' heartbeats may have been lost: ``relay.worker.failover``)."""
    # the sole worker at its start sweeps whatever the lock says: the lock may be the
    # dead run's own
    if not store.pending.lock("sweeper", interval) and not sole:
        return 0
    count = 0
    for node in store.pending.dead_nodes(everyone_else=sole) if take_over else ():
        taken = store.pending.take_over(node)
        count += sum(republish(celery, store, m, spec, poison_after) for m, spec in taken)
        if taken:
            log.warning("took over %d tasks held by worker %s (it stopped)", len(taken), node)
        messages = store.alerts.release(node)  # notification messages it claimed, unsent
        if messages:
            log.warning("took over %d notification messages of worker %s", messages, node)
        overdue = store.lifecycle.release(node)  # deadlines it claimed, not yet fired
        if overdue:
            log.warning("took over %d overdue messages of worker %s", overdue, node)
    deadlines.fire_due(store, orders_of)  # each logged; not work published again
    if store.pending.count() == 0 or store.inbox_size():
        return count
    if any(size for _, size in queue_sizes(celery)):
        return count
    for member, spec in store.pending.overdue():
        if republish(celery, store, member, spec, poison_after):
            log.warning(
                "republished %s: overdue and not in any queue (lost by the broker?)", member
            )
            count += 1
    return count


def start(
    celery: Celery,
    store: Store,
    interval: float = INTERVAL,
    poison_after: int = 3,
    may_take_over: Callable[[], bool] = lambda: True,
    orders_of: deadlines.OrdersOf | None = None,
) -> threading.Event:
    """Run sweeps in a daemon thread until the returned event is set; dead nodes' work is
    taken over only while ``may_take_over()``."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                sweep_once(
                    celery,
                    store,
                    interval,
                    poison_after=poison_after,
                    take_over=may_take_over(),
                    orders_of=orders_of,
                )
            except Exception as exc:  # keep sweeping; say why not
                log.warning("sweep skipped: %s", exc)

    threading.Thread(target=loop, name="relay-sweeper", daemon=True).start()
    return stop
