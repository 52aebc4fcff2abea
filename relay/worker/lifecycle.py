"""What a worker process runs beside its tasks, hooked to Celery's worker signals.

In the main process:

- the rules watcher (hot reload; SIGHUP checks at once instead of Celery's restart);
- the heartbeat of this worker node and the task messages it holds
  (``relay.worker.ownership``);
- the intake that takes accepted events from the inbox and routes them
  (``relay.worker.intake``);
- the sweeper that publishes again what nobody holds (``relay.worker.sweeper``) and fires
  the messages' overdue deadlines (``relay.worker.deadlines``);
- the primary watch, which after a Redis failover holds take-overs back for a while and
  publishes again what this node owns but works on nowhere (``relay.worker.failover``);
- the flusher that sends notification messages when due (``relay.worker.alerts``);
- the metrics endpoint on ``RELAY_WORKER_METRICS_PORT``;
- traces, when configured (``relay.tracing``): a provider per process, the pool's
  children each starting their own, flushed as each stops.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from celery.exceptions import Reject
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    task_received,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from kombu.exceptions import OperationalError

from relay import logs, metrics, tracing
from relay.ops.broker import queue_sizes
from relay.state import is_unavailable
from relay.worker import alerts, failover, sweeper
from relay.worker.app import RelayCelery
from relay.worker.intake import Intake

#: what Celery and kombu raise when a broker connection broke under them (Redis away is
#: relay.state.is_unavailable)
_CONNECTION_LOST = (ConnectionError, OperationalError)


def outage_without_traceback(record: logging.LogRecord) -> bool:
    """Celery's lines for what a Redis failover (or a broker outage) makes happen, as one
    warning line without a traceback: a task giving its message back because Redis did not
    answer (``Reject``, see ``relay.worker.tasks``), and an acknowledgement lost with its
    connection (the broker redelivers the message; the copy is recognised and dropped)."""
    exc = record.exc_info[1] if record.exc_info else None
    lost = exc is not None and (isinstance(exc, _CONNECTION_LOST) or is_unavailable(exc))
    lost_ack = lost and str(record.msg).startswith(("Couldn't ack", "Couldn't reject"))
    if isinstance(exc, Reject) or lost_ack:
        record.exc_info = None
        record.exc_text = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def install(celery: RelayCelery) -> None:
    state: dict[str, Any] = {}

    @setup_logging.connect(weak=False)
    def _logging(**_: Any) -> None:  # Celery's own logs in relay's format
        logs.configure(celery.settings.log_format, celery.settings.log_pii)
        for handler in logging.getLogger().handlers:
            handler.addFilter(outage_without_traceback)

    @task_received.connect(weak=False)
    def _received(request: Any = None, **_: Any) -> None:
        celery.heartbeat.received(getattr(request, "id", None))

    # A task counts as worked on while it runs: one received and waiting (a countdown) is
    # dropped by Celery when its broker connection breaks, and redelivered by the broker.
    @task_prerun.connect(weak=False)
    def _runs(task_id: str | None = None, **_: Any) -> None:
        celery.holdings.task_started(task_id)

    @task_postrun.connect(weak=False)
    def _ran(task_id: str | None = None, **_: Any) -> None:
        celery.holdings.task_done(task_id)

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        tracing.start("worker")  # after the pool's children are forked (they start their own)
        celery.rules_holder.ensure_watching()
        signal.signal(signal.SIGHUP, lambda signum, frame: celery.rules_holder.check())
        state["heartbeat"] = celery.heartbeat.start()
        watch = celery.primary_watch
        state["sweeper"] = sweeper.start(
            celery,
            celery.store,
            poison_after=celery.settings.poison_after,
            may_take_over=watch.steady,
            orders_of=lambda event: celery.rules_holder.current.order_values(event),
        )
        state["failover"] = failover.start(celery, watch, celery.holdings)
        state["alerts"] = alerts.start(celery.runtime)
        intake = Intake(celery.runtime, celery.settings.intake_threads)
        intake.start()
        state["intake"] = intake
        if celery.settings.worker_metrics_port:
            metrics.serve(
                celery.settings.worker_metrics_port,
                celery.store,
                lambda: queue_sizes(celery),
                host=celery.settings.worker_metrics_host,
            )

    @worker_process_init.connect(weak=False)
    def _child(**_: Any) -> None:  # prefork pool children hold their own copy of the rules
        celery.rules_holder.ensure_watching()
        tracing.start("worker")  # and their own tracer provider, made after the fork

    @worker_process_shutdown.connect(weak=False)
    def _child_exits(**_: Any) -> None:
        tracing.stop()

    @worker_shutting_down.connect(weak=False)
    def _closing(**_: Any) -> None:  # a stop signal: take no new events from the inbox
        if "intake" in state:
            state["intake"].close()

    @worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        if "intake" in state:
            state["intake"].stop(wait=True)
        for name in ("sweeper", "failover", "alerts", "heartbeat"):
            if name in state:
                state[name].set()
        try:
            celery.store.pending.leave()
        except Exception:  # Redis away: the missed heartbeat says the same
            pass
        tracing.stop()  # export what the routings and attempts left buffered
        if metrics.OWNED_DIR:
            metrics.clean(metrics.OWNED_DIR)
