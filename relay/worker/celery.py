"""The Celery entry point: ``celery -A relay.worker worker`` (the Procfile's worker)."""

import sys

from relay import metrics
from relay.errors import ConfigError

metrics.prepare("worker")  # before anything imports prometheus_client

try:
    from relay.worker.app import make_celery

    app = make_celery()
    app.settings.require_redis()
    app.rules  # noqa: B018 - load now: a bad rules file stops the worker at start
except ConfigError as exc:  # one line naming the variable, not a traceback
    print(f"relay: {exc}", file=sys.stderr)
    sys.exit(2)

from relay.worker.lifecycle import install  # noqa: E402 - only once the settings are known good

install(app)
