"""One redis-server process of a test topology (tests/topology.py): a data node or a
Sentinel, on 127.0.0.1, with its config file and log in a directory of its own.

The config file is the process's own: redis-server may rewrite it (CONFIG REWRITE), which
is how a Sentinel records what it learns and how it makes a data node it promoted or
demoted keep its new role across a restart.

Each process gets SIGKILL from the kernel if the thread that started it exits (so a
crashed test run leaves none behind): start and restart nodes from the test's own thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from tests.harness import wait_until

HOST = "127.0.0.1"
CONFIG_FILE = "redis.conf"
LOG_FILE = "redis.log"
OUTPUT_FILE = "output.log"  #: what the process printed (a config error, before its log)
DEFAULT_START_TIMEOUT = 15.0  #: seconds for a started process to answer PING
DEFAULT_STOP_TIMEOUT = 10.0  #: seconds after SIGTERM before SIGKILL
_PR_SET_PDEATHSIG = 1

DATA_CONF = """\
bind {host}
port {port}
dir {dir}
logfile {dir}/{log}
daemonize no
save ""
appendonly {appendonly}
appendfsync everysec
repl-diskless-sync yes
repl-diskless-sync-delay 0
"""

SENTINEL_CONF = """\
bind {host}
port {port}
dir {dir}
logfile {dir}/{log}
daemonize no
sentinel monitor {service} {host} {primary} {quorum}
sentinel down-after-milliseconds {service} {down_after}
sentinel failover-timeout {service} {failover_timeout}
sentinel parallel-syncs {service} 1
"""


def _config(template: str, directory: Path, port: int, **fields: object) -> str:
    return template.format(host=HOST, port=port, dir=directory, log=LOG_FILE, **fields)


def _die_with_test_thread() -> None:
    """preexec_fn: SIGKILL (which also ends a paused process) when the starter goes."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RedisNode:
    """A redis-server on ``port`` run from ``directory/redis.conf`` (``config`` is written
    there at construction); a Sentinel with ``sentinel=True``. ``password`` is what clients
    of this node send (``requirepass``), if any.

    ``failed_at`` is the ``time.monotonic()`` of the last :meth:`kill` or :meth:`pause`,
    from which a failover's duration is measured.
    """

    def __init__(
        self,
        executable: str,
        directory: Path,
        port: int,
        config: str,
        *,
        password: str | None = None,
        sentinel: bool = False,
    ) -> None:
        self.executable = executable
        self.directory = directory
        self.port = port
        self.password = password
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.failed_at: float | None = None
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(config)

    @classmethod
    def data(
        cls,
        executable: str,
        directory: Path,
        port: int,
        *,
        password: str | None = None,
        appendonly: bool = False,
    ) -> RedisNode:
        """A data node (primary or replica): no snapshots, an append-only file only if
        asked; with ``password`` as both ``requirepass`` and ``masterauth``, since any
        node may become the primary."""
        config = _config(DATA_CONF, directory, port, appendonly="yes" if appendonly else "no")
        if password:
            config += f"requirepass {password}\nmasterauth {password}\n"
        return cls(executable, directory, port, config, password=password)

    @classmethod
    def sentinel_of(
        cls,
        executable: str,
        directory: Path,
        port: int,
        *,
        service: str,
        primary_port: int,
        quorum: int,
        down_after_ms: int,
        failover_timeout_ms: int,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> RedisNode:
        """A Sentinel watching the primary on ``primary_port`` as ``service``, which
        ``password`` opens; ``sentinel_password`` is its own (and what it sends to its
        peers)."""
        config = _config(
            SENTINEL_CONF,
            directory,
            port,
            service=service,
            primary=primary_port,
            quorum=quorum,
            down_after=down_after_ms,
            failover_timeout=failover_timeout_ms,
        )
        if password:
            config += f"sentinel auth-pass {service} {password}\n"
        if sentinel_password:
            config += f"requirepass {sentinel_password}\n"
        return cls(executable, directory, port, config, password=sentinel_password, sentinel=True)

    def __repr__(self) -> str:
        kind = "sentinel" if self.sentinel else "redis"
        return f"<{kind} {HOST}:{self.port} pid={self.process and self.process.pid}>"

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self!r} was never started")
        return self.process.pid

    def url(self, db: int = 0) -> str:
        """A plain ``redis://`` URL of this node, with its password."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/{db}"

    def client(self, **options: Any) -> redis.Redis:
        """A client of this node (decoded answers, 5 s socket timeout unless ``options``
        say otherwise); the caller closes it."""
        options = {"decode_responses": True, "socket_timeout": 5, **options}
        return redis.Redis(host=HOST, port=self.port, password=self.password, **options)

    def info(self, section: str = "replication") -> dict[str, Any]:
        """``INFO section`` as a dict (raises redis.RedisError if the node does not answer)."""
        with self.client(socket_timeout=1, socket_connect_timeout=1) as client:
            info: dict[str, Any] = client.info(section)
            return info

    def role(self) -> str | None:
        """``master`` or ``slave`` as INFO says, or None if it does not answer."""
        if not self.running() or self.paused:
            return None
        try:
            return str(self.info()["role"])
        except redis.RedisError:
            return None

    def replicates(self, primary: RedisNode) -> bool:
        """Whether it is a replica of ``primary`` with its link up."""
        try:
            info = self.info()
        except redis.RedisError:
            return False
        return (
            info.get("role") == "slave"
            and info.get("master_port") == primary.port
            and info.get("master_link_status") == "up"
        )

    def state(self) -> str:
        """What a failure message says of it: role and link, or why there is none."""
        if not self.running():
            return "down"
        if self.paused:
            return "paused"
        try:
            info = self.info()
        except redis.RedisError as exc:
            return f"no answer ({exc})"
        if info["role"] == "master":
            return "master"
        return f"replica of {info['master_port']}, link {info['master_link_status']}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answers(self) -> bool:
        """Whether it is running, not paused, and answers PING."""
        if not self.running() or self.paused:
            return False
        try:
            with self.client(socket_timeout=1, socket_connect_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def start(self, replicaof: tuple[str, int] | None = None) -> RedisNode:
        """Start the process from its config file (a data node as a replica of
        ``replicaof`` if given, overriding the file) and wait until it answers."""
        if self.running():
            raise RuntimeError(f"{self!r} is running already")
        argv = [self.executable, str(self.directory / CONFIG_FILE)]
        if self.sentinel:
            argv.append("--sentinel")
        if replicaof is not None:
            argv += ["--replicaof", replicaof[0], str(replicaof[1])]
        with open(self.directory / OUTPUT_FILE, "ab") as output:
            self.process = subprocess.Popen(
                argv,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_test_thread,
            )
        self.paused = False
        try:
            wait_until(lambda: self.answers() or not self.running(), DEFAULT_START_TIMEOUT)
        except AssertionError:
            raise AssertionError(f"{self!r} did not answer: {self.log_tail()}") from None
        if not self.running():
            raise AssertionError(f"{self!r} exited at start: {self.log_tail()}")
        return self

    def restart(self, replicaof: tuple[str, int] | None = None) -> RedisNode:
        """Start it again after it stopped or was killed: same port, same config file (as
        the process or Sentinel last rewrote it). A data node without ``replicaof`` comes
        back in the role its file says; a Sentinel that counts it as a replica makes it one
        again by itself, in about 8 s (Sentinel's own wait before correcting a role)."""
        return self.start(replicaof)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (a signal that ends it) and wait until the process has exited."""
        if not self.running():
            return
        self.failed_at = time.monotonic()
        assert self.process is not None
        self.process.send_signal(sig)
        if self.paused and sig != signal.SIGKILL:
            self.process.send_signal(signal.SIGCONT)  # a stopped process acts on it then
        self.paused = False
        try:
            self.process.wait(DEFAULT_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s): no process is left."""
        self.kill(signal.SIGTERM)

    def pause(self) -> None:
        """SIGSTOP: the process holds its connections and answers nothing."""
        assert self.running(), f"{self!r} is not running"
        self.failed_at = time.monotonic()
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def log_tail(self, lines: int = 8) -> str:
        """The end of its log and output, for failure messages."""
        tails = []
        for name in (OUTPUT_FILE, LOG_FILE):
            try:
                text = (self.directory / name).read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                tails.append(f"{self.directory / name}: " + " | ".join(text.splitlines()[-lines:]))
        return "\n".join(tails) or f"(nothing logged in {self.directory})"
