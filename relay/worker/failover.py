"""What a worker does when its Redis fails over (or restarts, or drops a call's answer).

Redis replicates asynchronously: the writes of the last moment before a primary dies may
be missing on the replica that takes its place. Accepted events are not among them (an
accept is answered only once ``RELAY_REDIS_MIN_REPLICAS`` replicas hold it), but a
worker's own bookkeeping may be:

- **heartbeats**: a live node's last beats may be lost, and none can be written while no
  primary is reachable. :class:`PrimaryWatch` notices a new server (its run id changed)
  or an outage, and the sweeper then takes nothing over until every node has had
  :data:`relay.state.pending.NODE_TTL` seconds of the new primary to beat again: a
  failover never makes a live worker look dead.
- **settlements**: a routing or delivery this node finished may come back as pending and
  owned by it, with nobody working on it; a call whose answer was lost (the inbox taken,
  then the connection dropped) leaves the same. :func:`reconcile` publishes again every
  member this node owns but does not hold (``relay.worker.ownership.Holdings``). Tasks
  are idempotent: a copy of work that did settle is dropped.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery

from relay.state import RedisError, Store
from relay.state.pending import NODE_TTL
from relay.worker.ownership import Holdings
from relay.worker.sweeper import publish, republish

log = logging.getLogger("relay.worker")


class PrimaryWatch:
    """Which Redis server answers, and since when it has answered without a break."""

    def __init__(
        self, store: Store, interrupted: threading.Event, now: float | None = None
    ) -> None:
        self.store = store
        self.server: str | None = None
        #: since when the same server has answered (this process's start, at first: a
        #: failover may have just happened)
        self.steady_since = time.time() if now is None else now
        #: set by any thread whose Redis call failed: once Redis answers again, what this
        #: node owns is checked
        self._interrupted = interrupted

    def interrupted(self) -> None:
        """Check again at the next look (a reconciliation did not finish)."""
        self._interrupted.set()

    def check(self, now: float | None = None) -> bool:
        """Ask which server answers; True when this node's work should be reconciled:
        another server than last time, or calls failed since. RedisError when none
        answers (the caller counts that as an outage too)."""
        now = time.time() if now is None else now
        try:
            server = self.store.server_id()
        except RedisError:
            self.steady_since = now
            self._interrupted.set()
            raise
        changed = self.server is not None and server != self.server
        if changed:
            log.warning("Redis failed over (another server answers): reconciling this node")
            self.steady_since = now
        self.server = server
        was_interrupted = self._interrupted.is_set()
        self._interrupted.clear()
        return changed or was_interrupted

    def steady(self, now: float | None = None) -> bool:
        """True once every node has had NODE_TTL seconds of this server to beat."""
        return (time.time() if now is None else now) - self.steady_since >= NODE_TTL


def reconcile(celery: Celery, watch: PrimaryWatch, holdings: Holdings) -> int:
    """Publish again what this node owns in Redis but works on nowhere; how many. Each is
    disowned once its task is published (a failed publish leaves it owned, and the watch
    tries again). Not counted toward poison: no worker died handling it."""
    store = watch.store
    orphans = [(m, spec) for m, spec in store.pending.owned() if not holdings.holds(m)]
    count = 0
    for member, spec in orphans:
        if spec is None:  # a task that does not decode: poison at once
            republish(celery, store, member, spec, poison_after=0)
            continue
        try:
            publish(celery, store, member, spec)
        except Exception:
            watch.interrupted()
            raise
        store.pending.disown(member)
        count += 1
    if orphans:
        log.warning("published again %d tasks this node held in Redis but not here", count)
    return count


#: seconds between two looks at which server answers
INTERVAL = 2.0


def start(celery: Celery, watch: PrimaryWatch, holdings: Holdings) -> threading.Event:
    """Watch the primary in a daemon thread, reconciling this node after a failover or an
    interruption, until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(INTERVAL):
            try:
                if watch.check():
                    reconcile(celery, watch, holdings)
            except Exception as exc:  # Redis or the broker away: look again
                log.info("primary watch: %s", exc)

    threading.Thread(target=loop, name="relay-primary-watch", daemon=True).start()
    return stop
