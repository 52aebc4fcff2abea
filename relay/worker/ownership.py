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

from relay.state import Store
from relay.state.pending import HEARTBEAT

log = logging.getLogger("relay.worker")

#: separates the pending member from a unique part in the ids of the tasks relay publishes
SEP = "|"


def new_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def task_id(member: str) -> str:
    """A Celery task id that names the pending member the task works on."""
    return f"{member}{SEP}{uuid.uuid4().hex}"


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
        next heartbeat on."""
        member = member_of(task_id)
        if member:
            with self._lock:
                self._received.add(member)

    def beat(self) -> None:
        with self._lock:
            taken, self._received = self._received, set()
        self.store.pending.heartbeat(taken)

    def start(self) -> threading.Event:
        """Beat now, then every HEARTBEAT seconds in a daemon thread until the returned
        event is set."""
        stop = threading.Event()
        self.beat()

        def loop() -> None:
            while not stop.wait(HEARTBEAT):
                try:
                    self.beat()
                except Exception as exc:  # noqa: BLE001 - Redis away: beat again later
                    log.warning("heartbeat skipped: %s", exc)

        threading.Thread(target=loop, name="relay-heartbeat", daemon=True).start()
        return stop
