"""The Celery entry point: ``celery -A relay.worker worker`` (the Procfile's worker)."""

import sys

from relay import metrics
from relay.errors import ConfigError

metrics.prepare("worker")  # before anything imports prometheus_client

# Imported only once the metrics directory is set: prometheus_client reads it at import.
from relay.worker.app import make_worker_app  # noqa: E402
from relay.worker.lifecycle import install  # noqa: E402
from relay.worker.recovery import resume  # noqa: E402

try:
    app = make_worker_app()
    app.settings.require_redis()
    app.store  # noqa: B018 - Sentinels that do not know the service: a bad setting
    app.rules  # noqa: B018 - load now: a bad rules file stops the worker at start
except ConfigError as exc:  # one line naming the variable, not a traceback
    print(f"relay: {exc}", file=sys.stderr)
    sys.exit(2)

install(app)
if app.settings.sole_worker:
    resume(app, app.store, app.settings.poison_after)
