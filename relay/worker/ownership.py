"""This worker node's heartbeat, and the task messages it holds.

The node id names one worker process (host, pid and a random part, so any number of
workers run on one host). Every :data:`relay.state.pending.HEARTBEAT` seconds the node
says it is alive and adds to its owned set the pending members of the task messages it
received since (a retry waiting for its time, a task not yet started). A node silent for
:data:`relay.state.pending.NODE_TTL` seconds is dead: the sweeper of any other worker
publishes again what it held (``relay.worker.sweeper``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from relay.state import Store
from relay.state.keys import deliver_member, route_member
from relay.state.pending import HEARTBEAT

log = logging.getLogger("relay.worker")

#: separates the pending member from a unique part in the ids of the tasks relay publishes
SEP = "|"
#: ends the id of a task its receiver holds at once, not from its next heartbeat on: an
#: ordered delivery's (its key waits for it; received by a worker that dies before its
#: next beat, it would wait for the broker to deliver it again)
AT_ONCE = "!"


def new_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def task_id(member: str, at_once: bool = False) -> str:
    """A Celery task id that names the pending member the task works on (``at_once``: its
    receiver holds it at once)."""
    return f"{member}{SEP}{uuid.uuid4().hex}{AT_ONCE if at_once else ''}"


def member_of(task_id: str | None) -> str | None:
    if not task_id or SEP not in task_id:
        return None
    return task_id.split(SEP, 1)[0]


class Heartbeat:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._received: set[str] = set()
        self._lock = threading.Lock()

    def received(self, task_id: str | None) -> None:
        """A task message arrived (Celery's ``task_received``): held by this node from the
        next heartbeat on (one marked :data:`AT_ONCE`: from now on, one Redis call)."""
        member = member_of(task_id)
        if not member:
            return
        if task_id and task_id.endswith(AT_ONCE):
            try:
                self.store.pending.heartbeat([member])
                return
            except Exception as exc:  # Redis away: the next beat records it
                log.info("task %s: held from the next heartbeat: %s", member, exc)
        with self._lock:
            self._received.add(member)

    def beat(self) -> None:
        with self._lock:
            taken, self._received = self._received, set()
        try:
            self.store.pending.heartbeat(taken)
        except BaseException:  # not recorded: the next beat records them
            with self._lock:
                self._received |= taken
            raise

    def start(self) -> threading.Event:
        """Beat now, then every HEARTBEAT seconds in a daemon thread until the returned
        event is set."""
        stop = threading.Event()
        self.beat()

        def loop() -> None:
            while not stop.wait(HEARTBEAT):
                try:
                    self.beat()
                except Exception as exc:  # Redis away: beat again later
                    log.warning("heartbeat skipped: %s", exc)

        threading.Thread(target=loop, name="relay-heartbeat", daemon=True).start()
        return stop


class Holdings:
    """The pending members this process is working on now: events its intake threads
    route (with their first attempts), and tasks it runs (a prefork pool's children run
    theirs in other processes: there, only the intake's work is known).

    After a failover, the members this node owns in Redis but holds nowhere here are
    orphans (their settlement was lost with the old primary, or a call's answer was):
    ``relay.worker.failover`` publishes them again.
    """

    def __init__(self) -> None:
        self._count: Counter[str] = Counter()
        self._tasks: dict[str, str] = {}  #: task id → member
        self._lock = threading.Lock()

    def hold(self, *members: str) -> None:
        with self._lock:
            self._count.update(members)

    def release(self, *members: str) -> None:
        with self._lock:
            self._count.subtract(members)
            for member in members:
                if self._count[member] <= 0:
                    del self._count[member]

    def hold_routing(self, event_id: str) -> None:
        """:meth:`hold` the routing of event ``event_id`` (an intake thread's)."""
        self.hold(route_member(event_id))

    def release_routing(self, event_id: str) -> None:
        self.release(route_member(event_id))

    @contextmanager
    def holding(self, *members: str) -> Iterator[None]:
        self.hold(*members)
        try:
            yield
        finally:
            self.release(*members)

    def holding_deliveries(self, *delivery_ids: str) -> AbstractContextManager[None]:
        """:meth:`holding` the deliveries ``delivery_ids`` (a routing's first attempts, an
        ordered delivery whose turn came)."""
        return self.holding(*(deliver_member(did) for did in delivery_ids))

    def task_started(self, task_id: str | None) -> None:
        member = member_of(task_id)
        if member and task_id:
            with self._lock:
                self._tasks[task_id] = member
                self._count[member] += 1

    def task_done(self, task_id: str | None) -> None:
        with self._lock:
            member = self._tasks.pop(task_id or "", None)
        if member:
            self.release(member)

    def holds(self, member: str) -> bool:
        with self._lock:
            return self._count[member] > 0
