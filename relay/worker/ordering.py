"""Ordered delivery in the worker: which deliveries are ordered, and running the ones
whose turn has come.

A delivery to a destination with ``ordered_by: FIELD`` is ordered when its event has a
value for the field (:func:`relay.rules.fields.order_value`): its job carries the key
(``order``), decided once at routing, so every retry and copy of it goes the same way
whatever the rules become. Re-routes, fallbacks and the replay of a dead letter that did
not block its key are made without it: they are not ordered.

The state lives in Redis (:mod:`relay.state.ordering`): the routing call and the
attempt's start decide whether it is the key's turn, and a settlement wakes the next.
What a settlement woke is this node's in Redis (owned), and this thread runs it next,
right after the attempt that woke it (:func:`in_turn`: held by this process meanwhile, so
the primary watch leaves it alone; taken over, should the worker die). Published as a
``relay.deliver`` task instead, the woken delivery could be received by another worker
that dies before its heartbeat records it, and wait for the broker's redelivery. What is
woken outside a delivery (a routing dead-lettered) is published.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from relay.events import Job
from relay.rules import Ruleset
from relay.rules.fields import order_value
from relay.state.ordering import new_order
from relay.worker.runtime import Runtime

log = logging.getLogger("relay.deliver")

#: the deliveries woken in this thread's chain (:func:`in_turn`), run after it
_chain = threading.local()


def ordered(ruleset: Ruleset, jobs: Sequence[Job]) -> list[Job]:
    """``jobs`` (the first routing's), each to an ordered destination with its key."""
    out = []
    for job in jobs:
        destination = ruleset.destinations.get(job["destination"])
        by = destination.ordered_by if destination else None
        value = order_value(by, job["event"]) if by else None
        if destination is not None and by and value is not None:
            job = {**job, "order": new_order(by, value, destination.on_failure == "block")}
        out.append(job)
    return out


def publish(runtime: Runtime, woken: Sequence[Job]) -> None:
    """Publish the deliveries whose turn came (never raises: they are this node's in Redis,
    and the primary watch publishes them again when this fails)."""
    for job in woken:
        try:
            runtime.schedule(job, 0)
        except Exception as exc:  # owned in Redis: reconciled later
            runtime.interrupted.set()
            log.warning(
                "delivery %s: its turn came, not published yet: %s", job["delivery_id"], exc
            )
            continue
        log.debug("delivery %s: its turn came", job["delivery_id"])


def woke(runtime: Runtime, woken: Sequence[Job]) -> None:
    """The deliveries whose turn came: run next by this thread inside :func:`in_turn`,
    else published."""
    chain: list[Job] | None = getattr(_chain, "jobs", None)
    if chain is None:
        publish(runtime, woken)
    else:
        chain.extend(woken)


@contextmanager
def in_turn(runtime: Runtime, run: Callable[[Runtime, Job], object]) -> Iterator[None]:
    """The deliveries woken inside are run by this thread after it (``run``, one after
    another, each held by this process), and those they wake in turn; a nested use adds
    to the outer one's. At shutdown, or when the inside raises, they are published."""
    if getattr(_chain, "jobs", None) is not None:
        yield
        return
    chain: list[Job] = []
    _chain.jobs = chain
    try:
        yield
        while chain and not runtime.stopping.is_set():
            job = chain.pop(0)
            try:
                with runtime.holdings.holding_deliveries(job["delivery_id"]):
                    run(runtime, job)
            except Exception as exc:  # owned here: reconciled when held nowhere
                runtime.interrupted.set()
                log.warning("delivery %s: its turn came, not run: %s", job["delivery_id"], exc)
    finally:
        _chain.jobs = None
        publish(runtime, chain)
