"""gunicorn settings for the ingest baselines (:mod:`bench.baselines`): relay's, but what
relay runs in each process of its own.

    gunicorn bench.baselines:lpush -c python:bench.gunicorn_conf

Everything :mod:`relay.web.gunicorn_conf` sets (WEB_CONCURRENCY × WEB_THREADS, its worker
class reading each request whole in the event loop, timeouts, the app loaded in the
master, no access log) and its listening (:mod:`bench.listening`: a socket per worker
process), imported from it; not its ``post_fork`` and ``worker_exit``, which would build
relay's app in each baseline process and run relay's rules watcher and traces there, nor
its ``child_exit`` (relay's metrics).
"""

from bench.listening import on_exit, on_starting, reuse_port
from relay.web.gunicorn_conf import (
    accesslog,
    bind,
    control_socket_disable,
    errorlog,
    graceful_timeout,
    keepalive,
    logconfig_dict,
    logger_class,
    preload_app,
    threads,
    timeout,
    worker_class,
    workers,
)

__all__ = [
    "accesslog",
    "bind",
    "control_socket_disable",
    "errorlog",
    "graceful_timeout",
    "keepalive",
    "logconfig_dict",
    "logger_class",
    "on_exit",
    "on_starting",
    "preload_app",
    "reuse_port",
    "threads",
    "timeout",
    "worker_class",
    "workers",
]
