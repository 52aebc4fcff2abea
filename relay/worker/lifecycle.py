"""What a worker process runs beside its tasks, hooked to Celery's worker signals:

- the rules watcher (hot reload; SIGHUP checks at once instead of Celery's restart);
- the inbox pump (``relay.worker.pump``) and the pending-outbox sweeper (``relay.worker.sweeper``), in
  the main process;
- the metrics endpoint on ``RELAY_WORKER_METRICS_PORT``, in the main process.
"""

from __future__ import annotations

import signal

from celery.signals import setup_logging, worker_process_init, worker_ready, worker_shutdown

from relay import logs, metrics
from relay.worker import pump
from relay.worker import sweeper


def install(celery) -> None:
    state: dict = {}

    @setup_logging.connect(weak=False)
    def _logging(**_) -> None:  # Celery's own logs in relay's format
        logs.configure(celery.settings.log_format, celery.settings.log_pii)

    @worker_ready.connect(weak=False)
    def _ready(**_) -> None:
        celery.rules_holder.ensure_watching()
        signal.signal(signal.SIGHUP, lambda signum, frame: celery.rules_holder.check())
        interval = max(celery.settings.visibility_timeout / 4, 0.5)
        state["sweeper"] = sweeper.start(celery, celery.store, interval)
        state["pump"] = pump.start(celery.store, celery)
        if celery.settings.worker_metrics_port:
            metrics.serve(celery.settings.worker_metrics_port, celery.store, celery)

    @worker_process_init.connect(weak=False)
    def _child(**_) -> None:  # prefork pool children hold their own copy of the rules
        celery.rules_holder.ensure_watching()

    @worker_shutdown.connect(weak=False)
    def _shutdown(**_) -> None:
        for name in ("pump", "sweeper"):
            if name in state:
                state[name].set()
        if metrics.OWNED_DIR:
            metrics.clean(metrics.OWNED_DIR)
