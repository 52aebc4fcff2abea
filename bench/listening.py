"""gunicorn settings for the bench's other web apps: relay's way of listening, nothing else.

    gunicorn bench.naive:app -c python:bench.listening --worker-class gthread …

The listening part of :mod:`relay.web.gunicorn_conf`, imported from it rather than copied:
a TCP socket of its own in each worker process (``SO_REUSEPORT``, the kernel spreading new
connections over them), a port something already listens on refused in one line, and the
per-process sockets turned off for a Unix socket or systemd's. Not its ``post_fork``, which
builds relay's app in each process and starts relay's rules watcher and traces, nor its
``child_exit`` (relay's metrics): an app under these settings runs only itself.

The worker class, process and thread counts and timeouts stay gunicorn's defaults unless
the command line sets them (it overrides a config file).
"""

from relay.web.gunicorn_conf import on_exit, on_starting, reuse_port

# importing relay's settings made a directory for relay's metrics in this process (unused
# here): relay's on_exit removes it when the master stops
__all__ = ["on_exit", "on_starting", "reuse_port"]
