"""``relay up``: run the embedded Redis, the web server and a worker as one unit.

Children run in their own sessions (a terminal's Ctrl-C reaches only us) and get SIGTERM
from the kernel if this process dies (PR_SET_PDEATHSIG), so no process is left behind.
Stop order: web first (no new events), then the worker (finishes or gives back its
tasks), then Redis (flushes its append-only file).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

PR_SET_PDEATHSIG = 1
RESTART_DELAY = 1.0  #: seconds before a child that died on its own is started again
CONFIG_EXIT = 2  #: a child exiting with this status found bad settings: do not restart it


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when its parent dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: rely on the clean stop path


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    stop_timeout: float = 15.0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, env=self.env, start_new_session=True, preexec_fn=die_with_parent
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            print(
                f"relay: {self.name} did not stop in {self.stop_timeout:g}s; killing it",
                file=sys.stderr,
            )
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Service(Protocol):
    """A process the supervisor keeps alive but did not start (the embedded Redis)."""

    name: str

    def running(self) -> bool: ...

    def restart(self) -> None: ...


class Supervisor:
    """Starts children, restarts one (or a service) that dies, stops all on SIGINT/SIGTERM."""

    def __init__(self, children: list[Child], services: Sequence[Service] = ()) -> None:
        self.children = children
        self.services = list(services)
        self.stopping = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def start(self) -> None:
        for child in self.children:
            child.start()

    def watch(self, poll: float = 0.2) -> int:
        """Until a stop signal (0) or a child's configuration error (2): restart the dead
        (the services first: the children need them)."""
        while not self.stopping:
            time.sleep(poll)
            for service in self.services:
                if self.stopping or service.running():
                    continue
                print(f"relay: {service.name} died; restarting it", file=sys.stderr)
                try:
                    service.restart()
                except Exception as exc:  # say why, try again next poll
                    print(f"relay: {service.name} did not restart: {exc}", file=sys.stderr)
                    time.sleep(RESTART_DELAY)
            for child in self.children:
                if self.stopping or child.running():
                    continue
                code = child.process.returncode if child.process else None
                if code == CONFIG_EXIT:
                    print(f"relay: {child.name} refused its configuration", file=sys.stderr)
                    return CONFIG_EXIT
                print(f"relay: {child.name} exited ({code}); restarting", file=sys.stderr)
                time.sleep(RESTART_DELAY)
                if not self.stopping:
                    child.start()
        return 0

    def stop(self) -> None:
        for child in self.children:
            child.stop()
