"""Takes accepted events from the Redis inbox and routes them, first attempts included.

The web process answers 200 once an event is in Redis (``Store.accept``: one round trip).
Each worker's main process runs one intake thread: it takes as many events as it has
free threads for (up to :data:`BATCH` at a time) and routes each in its pool of
``RELAY_WORKER_INTAKE_THREADS`` threads (``relay.worker.routing``): the first attempt of
every delivery runs there, with no Celery hop; only retries travel as tasks.

An event taken is held by this node (``relay:owned:<node>``) until its routing is
recorded: should the worker die first, another worker takes it over as soon as this
node's heartbeat is missed (``relay.worker.sweeper``).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from relay.events import Event
from relay.state import RedisError, is_infrastructure
from relay.worker import routing
from relay.worker.runtime import Runtime

log = logging.getLogger("relay.pump")

BATCH = 100  #: events taken from the inbox at a time, at most
WAIT = 1.0  #: seconds a take waits for the inbox, so the thread notices a stop soon
REDIS_PAUSE = 1.0  #: seconds before routing an event again after a Redis error


class Intake:
    def __init__(self, runtime: Runtime, threads: int) -> None:
        self.runtime = runtime
        self.threads = threads
        self.slots = threading.Semaphore(threads)
        self.stopping = runtime.stopping  # set at shutdown: routings waiting on Redis end
        self.closed = threading.Event()  # set when shutdown begins: take nothing more
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="relay-intake")
        self._thread: threading.Thread | None = None

    def take_once(self, timeout: float = WAIT) -> int:
        """Take what the inbox holds now (as many as there are free threads, up to BATCH)
        and start routing it; returns how many."""
        if not self.slots.acquire(timeout=timeout):
            return 0
        free = 1
        while free < BATCH and self.slots.acquire(blocking=False):
            free += 1
        try:
            specs = self.runtime.store.take(free, timeout)
        except BaseException:
            self._release(free)
            raise
        self._release(free - len(specs))
        for spec in specs:
            event, *trace = spec["args"]  # and the request's trace context, when traced
            self.runtime.holdings.hold_routing(event["id"])  # released by _route
            self.pool.submit(self._route, event, trace[0] if trace else None)
        return len(specs)

    def _release(self, count: int) -> None:
        for _ in range(count):
            self.slots.release()

    def _route(self, event: Event, trace: dict[str, str] | None) -> None:
        try:
            while True:
                try:
                    routing.route_event(self.runtime, event, trace)
                    return
                except Exception as exc:
                    if not is_infrastructure(exc):
                        raise
                    # the state store is away: keep the event, retry
                    self.runtime.interrupted.set()
                    log.warning("routing %s paused: %s", event["id"], exc)
                    if self.stopping.wait(REDIS_PAUSE):
                        return  # held by this node: taken over once it is gone
        except Exception:
            # routing dead-letters what would only fail again before it is recorded
            # (relay.worker.routing); this is a failure after, left to the pending outbox
            log.exception("routing %s failed unexpectedly; left to the pending outbox", event["id"])
            try:
                self.runtime.store.pending.disown_routing(event["id"])
            except RedisError:
                pass
        finally:
            self.runtime.holdings.release_routing(event["id"])
            self.slots.release()

    def start(self) -> None:
        """Take and route in a daemon thread until :meth:`stop`."""

        def loop() -> None:
            while not self.closed.is_set():
                try:
                    self.take_once()
                except Exception as exc:  # Redis away: wait, retry
                    # a take whose answer was lost leaves events held by this node in
                    # Redis and by no thread here: the primary watch reconciles them
                    self.runtime.interrupted.set()
                    log.warning("intake paused: %s", exc)
                    self.stopping.wait(1.0)

        self._thread = threading.Thread(target=loop, name="relay-intake", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Take nothing more (the worker begins to shut down); what was taken goes on."""
        self.closed.set()

    def stop(self, wait: bool = True) -> None:
        """Take nothing more; with ``wait``, let the routings under way finish."""
        self.closed.set()
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=WAIT + 1)
        self.pool.shutdown(wait=wait)
