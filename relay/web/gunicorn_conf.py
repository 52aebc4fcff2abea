"""gunicorn settings for the web process (``gunicorn -c python:relay.web.gunicorn_conf``).

``WEB_CONCURRENCY`` worker processes (default 2) with ``WEB_THREADS`` threads each
(default 4), bound to ``$PORT`` (default 8000) on all interfaces unless ``--bind`` is given.
The app is loaded once in the master so a bad setting stops the process with one line.
The worker class is gthread reading each request whole in its event loop before a thread
takes it, within ``RELAY_READ_TIMEOUT`` (:mod:`relay.web.server`): slow clients hold no
thread.
"""

import os
from typing import Any

from relay import logs, metrics

# Before the app (and prometheus_client) is loaded: every worker writes its metrics here.
_METRICS_DIR = metrics.prepare("web")

from gunicorn.glogging import Logger  # noqa: E402
from prometheus_client import multiprocess  # noqa: E402 - only once prepare() set the directory


class NoAccessLogLogger(Logger):
    """gunicorn's logger without access lines: the web logs one line per accepted event
    itself, and formatting an access line cost about a tenth of a request's CPU."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


bind = [f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "relay.web.server.BoundedReadWorker"
threads = int(os.environ.get("WEB_THREADS", "4"))
preload_app = True
# Webex Connect waits 10 s; nothing we do should take close to that.
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = None
logger_class = NoAccessLogLogger
errorlog = "-"
# Several relays (and test runs) on one machine must not share a control socket path.
control_socket_disable = True

logconfig_dict = logs.gunicorn_logconfig()


def child_exit(server: Any, worker: Any) -> None:  # gunicorn hook: drop a dead worker's gauges
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:  # gunicorn hook: remove the metrics directory made for this run
    if metrics.OWNED_DIR:
        metrics.clean(metrics.OWNED_DIR)
