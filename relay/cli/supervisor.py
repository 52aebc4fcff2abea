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
from dataclasses import dataclass, field

PR_SET_PDEATHSIG = 1
RESTART_DELAY = 1.0  #: seconds before a child that died on its own is started again
CONFIG_EXIT = 2  #: a child exiting with this status found bad settings: do not restart it


def _die_with_parent() -> None:
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
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, env=self.env, start_new_session=True, preexec_fn=_die_with_parent
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if not self.running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            print(
                f"relay: {self.name} did not stop in {self.stop_timeout:g}s; killing it",
                file=sys.stderr,
            )
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Supervisor:
    """Starts children, restarts one that dies, stops all on SIGINT/SIGTERM."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping = False

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def start(self) -> None:
        for child in self.children:
            child.start()

    def watch(self, poll: float = 0.2) -> int:
        """Until a stop signal (0) or a child's configuration error (2): restart the dead."""
        while not self.stopping:
            time.sleep(poll)
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
