"""gunicorn settings for the web process (``gunicorn -c python:relay.web.gunicorn_conf``).

``WEB_CONCURRENCY`` worker processes (default 2) with ``WEB_THREADS`` threads each
(default 4), bound to ``$PORT`` (default 8000) on all interfaces unless ``--bind`` is given.
The app is loaded once in the master so a bad setting stops the process with one line.
The worker class is gthread reading each request whole in its event loop before a thread
takes it, within ``RELAY_READ_TIMEOUT`` (:mod:`relay.web.server`): slow clients hold no
thread. Each worker process listens on a TCP socket of its own (``SO_REUSEPORT``), and the
kernel spreads new connections evenly over them.
"""

import errno
import os
import socket
import sys
from typing import Any

from relay import logs, metrics, tracing

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
# One listening socket per worker process, the kernel spreading new connections over them.
# With one shared socket, the keep-alive connections a sender opens at once split unevenly
# (the worker that wakes first takes most), and the busier process runs out of CPU while
# the other waits: `bench ingest`'s rounds swung between 31% and 168% of the LPUSH view;
# with a socket per process, 74-82%.
# on_starting turns it off where it cannot work, and refuses a port already in use.
reuse_port = True

logconfig_dict = logs.gunicorn_logconfig()


def on_starting(server: Any) -> None:  # gunicorn hook: in the master, before any bind
    """Per-process sockets only for TCP addresses (a Unix socket path is bound once) and
    without systemd's sockets. And since sockets with ``SO_REUSEPORT`` share a port with
    each other, a second relay started on the same port would take half of the first
    one's connections instead of failing: an address something listens on already is
    refused here, as gunicorn refuses it without the option."""
    addresses = server.cfg.address
    tcp = all(isinstance(address, tuple) for address in addresses)
    if not (tcp and hasattr(socket, "SO_REUSEPORT")) or os.environ.get("LISTEN_FDS"):
        server.cfg.set("reuse_port", False)
        return
    for host, port in addresses:
        taken = _in_use(host, port)
        if taken:
            server.log.error("relay: cannot listen on %s:%s: %s", host, port, taken)
            sys.exit(1)
        server.log.info("listening on %s:%s, one socket per worker process", host, port)


def _in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound by a socket without ``SO_REUSEPORT``, or None."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        probe.bind(address)
    except OSError as exc:
        return "address already in use" if exc.errno == errno.EADDRINUSE else str(exc)
    finally:
        probe.close()
    return None


def post_fork(server: Any, worker: Any) -> None:  # gunicorn hook: in each worker process
    """In each web process from its start: traces (when configured) from a provider of
    its own (the export thread of one made before the fork would not run in it), and the
    rules watcher, not from the first request that reads the rules: a process that served
    none would otherwise keep answering ``/readyz`` with a reload it never saw fail
    (``/metrics`` already saying it did)."""
    from relay.web.context import relay_of
    from relay.web.wsgi import app  # loaded in the master (preload_app): not built again

    tracing.start("web")
    relay_of(app).rules_holder.ensure_watching()


def worker_exit(server: Any, worker: Any) -> None:  # gunicorn hook: a worker process ends
    tracing.stop()  # export the spans still buffered


def child_exit(server: Any, worker: Any) -> None:  # gunicorn hook: drop a dead worker's gauges
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:  # gunicorn hook: remove the metrics directory made for this run
    if metrics.OWNED_DIR:
        metrics.clean(metrics.OWNED_DIR)
