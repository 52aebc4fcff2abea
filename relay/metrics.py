"""Prometheus metrics, correct across several processes (gunicorn workers, Celery pools).

Both the web and the worker side run in multiprocess mode: each process writes its values
to files in ``PROMETHEUS_MULTIPROC_DIR`` and a scrape sums them. :func:`prepare` points
that variable at a fresh directory when it is unset; it must run before
``prometheus_client`` is imported (the library reads the variable on import), which is why
this module imports it inside its functions.

Label sets are bounded: sources beyond ``MAX_SOURCES`` distinct values are counted as
``other``; routes and destinations come from the rules file; no ids or numbers.

The scrape also reads gauges from Redis and the broker: the caller hands :func:`render`
(or :func:`serve`) the state store and a function that reads the queue depths, so that this
module knows neither the Celery app nor its queues.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

MAX_SOURCES = 50
ENV = "PROMETHEUS_MULTIPROC_DIR"
_SOURCES: set[str] = set()
_SOURCES_LOCK = threading.Lock()

#: reads the task queues' depths: ``[(queue name, messages waiting), ...]``
QueueSizes = Callable[[], Iterable[tuple[str, int]]]

#: the directory :func:`prepare` made in this process (to remove at exit), if any
OWNED_DIR: str | None = None


class _Counted(Protocol):
    def count(self) -> int: ...


class _Pending(Protocol):
    def count(self) -> int: ...

    def liveness(self) -> tuple[int, float | None]: ...


class _Controlled(Protocol):
    def states(self) -> list[tuple[str, int, float | None]]: ...


class StateView(Protocol):
    """What a scrape reads from the state store (``relay.state.Store``)."""

    @property
    def controls(self) -> _Controlled: ...

    @property
    def dead_letters(self) -> _Counted: ...

    @property
    def pending(self) -> _Pending: ...

    def inbox_size(self) -> int: ...


class Versioned(Protocol):
    """A ruleset, as far as the version gauge cares."""

    @property
    def version(self) -> str: ...


def prepare(kind: str) -> str:
    """Make sure this process and its children write metrics to a directory; return it."""
    global OWNED_DIR
    path = os.environ.get(ENV)
    if not path:
        path = OWNED_DIR = tempfile.mkdtemp(prefix=f"relay-metrics-{kind}-")
        os.environ[ENV] = path
    os.makedirs(path, exist_ok=True)
    return path


def clean(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def source_label(source: str) -> str:
    with _SOURCES_LOCK:
        if source in _SOURCES or len(_SOURCES) < MAX_SOURCES:
            _SOURCES.add(source)
            return source
    return "other"


_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: seconds from a message's first receipt to its final one: carriers take seconds to days
_FINAL = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 3 * 86400)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


class Metrics:
    """The metric objects of this process (see :func:`m`)."""

    def __init__(self) -> None:
        # here, not at the top: only after prepare() (see the module docstring)
        from prometheus_client import Counter, Gauge, Histogram

        self.received: Counter = Counter(
            "relay_notifications_received_total",
            "Notifications accepted for routing",
            ["kind", "source"],
        )
        self.duplicates: Counter = Counter(
            "relay_notifications_duplicate_total",
            "Notifications answered 200 as duplicates, not routed again",
        )
        self.rejected: Counter = Counter(
            "relay_notifications_rejected_total",
            "Requests to the webhook refused, by HTTP status",
            ["reason"],
        )
        self.ingest_seconds: Histogram = Histogram(
            "relay_ingest_duration_seconds", "Time to accept a webhook request", buckets=_LATENCY
        )
        self.routed: Counter = Counter(
            "relay_events_routed_total", "Events matched by each route", ["route"]
        )
        self.unrouted: Counter = Counter("relay_events_unrouted_total", "Events no route matched")
        self.deliveries: Counter = Counter(
            "relay_deliveries_total",
            "Delivery attempts and their ends",
            ["destination", "type", "outcome"],
        )
        self.delivery_seconds: Histogram = Histogram(
            "relay_delivery_duration_seconds",
            "Time of one delivery attempt",
            ["destination"],
            buckets=_LATENCY,
        )
        self.end_to_end_seconds: Histogram = Histogram(
            "relay_end_to_end_seconds", "From receipt to successful delivery", buckets=_SLOW
        )
        self.dead_letters_dropped: Counter = Counter(
            "relay_dead_letters_dropped_total",
            "Dead letters dropped, oldest first, to keep RELAY_DEAD_LETTER_MAX",
        )
        self.alerts: Counter = Counter(
            "relay_alerts_total", "relay's own alerts (dead letters, circuit changes)", ["kind"]
        )
        self.alert_messages_sent: Counter = Counter(
            "relay_alert_messages_sent_total",
            "Notification messages sent (one per group and destination)",
            ["notification", "destination"],
        )
        self.alert_messages_dropped: Counter = Counter(
            "relay_alert_messages_dropped_total",
            "Notification messages that could not be sent (logged, never notified about)",
            ["notification", "destination"],
        )
        self.poisoned: Counter = Counter(
            "relay_poisoned_total",
            "Work moved to the dead letters as poison (republished RELAY_POISON_AFTER times)",
        )
        self.destination_waits: Counter = Counter(
            "relay_destination_waits_total",
            "Deliveries put back to wait by a destination's controls, without an attempt",
            ["destination", "reason"],
        )
        self.receipts: Counter = Counter(
            "relay_receipts_total",
            "Delivery receipts routed, by status and code (documented codes; else other)",
            ["status", "code"],
        )
        self.message_final_seconds: Histogram = Histogram(
            "relay_message_final_seconds",
            "From a message's first receipt to its final one (their own timestamps if any)",
            buckets=_FINAL,
        )
        self.messages_overdue: Counter = Counter(
            "relay_messages_overdue_total",
            "receipt_overdue events: messages without a final receipt in final_receipt_within",
        )
        self.messages_late: Counter = Counter(
            "relay_messages_late_total", "Final receipts that came after their message was overdue"
        )
        self.rules_info: Gauge = Gauge(
            "relay_rules_info",
            "The rules version in force (1)",
            ["version"],
            multiprocess_mode="liveall",
        )
        self.rules_reload_ok: Gauge = Gauge(
            "relay_rules_last_reload_success",
            "1 if the last rules reload worked, else 0",
            multiprocess_mode="livemin",
        )


@cache
def m() -> Metrics:
    """The metric objects (created on first use, after :func:`prepare`)."""
    return Metrics()


_IN_FORCE: set[str] = set()  # the version this process's rules_info says is in force


def rules_changed(ruleset: Versioned | None, ok: bool) -> None:
    """For RulesHolder's on_change: the version gauge and the reload-success gauge."""
    metrics = m()
    metrics.rules_reload_ok.set(1 if ok else 0)
    if ruleset is not None:
        for version in _IN_FORCE:
            metrics.rules_info.labels(version).set(0)
        _IN_FORCE.clear()
        _IN_FORCE.add(ruleset.version)
        metrics.rules_info.labels(ruleset.version).set(1)


def render(
    store: StateView | None = None, queue_sizes: QueueSizes | None = None
) -> tuple[bytes, str]:
    """The scrape: every process's values, plus gauges read from Redis and the broker."""
    # here, not at the top: only after prepare() (see the module docstring)
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    m()
    registry = CollectorRegistry()
    if os.environ.get(ENV):
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    extra = StateCollector(store, queue_sizes)
    registry.register(extra)
    try:
        return generate_latest(registry), CONTENT_TYPE_LATEST
    finally:
        registry.unregister(extra)


class StateCollector:
    """Gauges read at scrape time: dead letters stored, queue depth, pending tasks, the
    destinations' circuits and pauses, and the worker nodes' heartbeats."""

    def __init__(self, store: StateView | None, queue_sizes: QueueSizes | None) -> None:
        self.store, self.queue_sizes = store, queue_sizes

    def collect(self) -> Iterator[Metric]:
        # here, not at the top: only after prepare() (see the module docstring)
        from prometheus_client.core import GaugeMetricFamily

        if self.store is None:
            return
        try:
            dead = self.store.dead_letters.count()
            pending = self.store.pending.count()
        except Exception:  # a scrape must not fail because Redis did
            return
        yield GaugeMetricFamily("relay_dead_letters", "Dead letters stored", value=dead)
        yield GaugeMetricFamily(
            "relay_pending_tasks", "Tasks published and not yet settled", value=pending
        )
        depth = GaugeMetricFamily(
            "relay_queue_depth", "Messages waiting in each queue", labels=["queue"]
        )
        for name, size in self._queue_sizes():
            depth.add_metric([name], size)
        try:
            depth.add_metric(["relay:inbox"], self.store.inbox_size())
        except Exception:  # a scrape must not fail because Redis did
            pass
        yield depth
        yield from self._destinations()
        yield from self._workers()

    def _workers(self) -> Iterator[Metric]:
        """The worker nodes alive (read from Redis, where every node beats: what the web
        reports too, when no worker is left to report it)."""
        from prometheus_client.core import GaugeMetricFamily

        assert self.store is not None
        try:
            live, freshest = self.store.pending.liveness()
        except Exception:  # a scrape must not fail because Redis did
            return
        yield GaugeMetricFamily(
            "relay_worker_nodes",
            "Worker nodes whose last heartbeat is younger than 15 s (NODE_TTL)",
            value=live,
        )
        if freshest is not None:
            yield GaugeMetricFamily(
                "relay_worker_heartbeat_age_seconds",
                "Seconds since the freshest heartbeat of any worker node",
                value=max(time.time() - freshest, 0.0),
            )

    def _destinations(self) -> Iterator[Metric]:
        """Circuit state and pauses of the destinations ever paused or whose circuit
        moved (read from Redis at scrape time: what every worker sees)."""
        from prometheus_client.core import GaugeMetricFamily

        assert self.store is not None
        try:
            states = self.store.controls.states()
        except Exception:  # a scrape must not fail because Redis did
            return
        circuit = GaugeMetricFamily(
            "relay_destination_circuit_state",
            "Circuit breaker of each destination: 0 closed, 1 open, 2 half-open",
            labels=["destination"],
        )
        paused = GaugeMetricFamily(
            "relay_destination_paused", "1 while a destination is paused", labels=["destination"]
        )
        paused_for = GaugeMetricFamily(
            "relay_destination_paused_seconds",
            "Seconds since a paused destination was paused (0 when not paused)",
            labels=["destination"],
        )
        now = time.time()
        for name, state, since in states:
            circuit.add_metric([name], state)
            paused.add_metric([name], 0 if since is None else 1)
            paused_for.add_metric([name], 0 if since is None else max(now - since, 0.0))
        yield circuit
        yield paused
        yield paused_for

    def _queue_sizes(self) -> list[tuple[str, int]]:
        if self.queue_sizes is None:
            return []
        try:
            return list(self.queue_sizes())
        except Exception:  # nor because the broker did
            return []


def serve(
    port: int,
    store: StateView | None = None,
    queue_sizes: QueueSizes | None = None,
    host: str = "127.0.0.1",
) -> ThreadingHTTPServer:
    """A metrics endpoint for the worker (``RELAY_WORKER_METRICS_PORT``), in a thread; on
    loopback unless ``host`` (``RELAY_WORKER_METRICS_HOST``) says otherwise. Returns the
    server (its ``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            body, content_type = render(store, queue_sizes)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="relay-metrics", daemon=True).start()
    return server
