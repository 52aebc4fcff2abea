"""Real parts for the tests: a Celery worker process, polling with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "webex-connect"


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05):
    """The first truthy value of ``predicate()``, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def relay_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment a relay process of the tests runs with: no RELAY_* from outside."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    env.update(
        {
            "RELAY_REDIS_URL": redis_url,
            "RELAY_LOG_FORMAT": "console",
            "RELAY_RULES": str(ROOT / "config" / "rules.yaml"),
        }
    )
    env.update(extra)
    return env


class WorkerProcess:
    """``celery -A relay.worker worker`` as a real subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "relay.worker",
                "worker",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                *self.args,
            ],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: b"ready." in self.log_path.read_bytes() or self._died(), 30)
        assert not self._died(), self.log_path.read_text()
        return self

    def _died(self) -> bool:
        return self.process.poll() is not None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process:
            self._log.close()
