"""What the benchmarks and the soak start: a private Redis, relay's web process under
gunicorn (the Procfile's settings), Celery workers, and a local HTTP receiver."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from relay.cli import web_argv, worker_argv
from relay.cli.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent


def spread(values: list[float]) -> dict:
    """The median of ``values`` with their min and max (NaN when there are none)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


class HookServer:
    """A threaded HTTP server on 127.0.0.1 (url ``…/hook``) that answers each POST with the
    status :meth:`answer` returns and an empty body; subclasses say what they answer and
    what they record."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a killed worker hangs up
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def answer(self, headers: Message, body: bytes) -> int:
        """The status for one request (it may wait first: each runs in a thread of its own)."""
        raise NotImplementedError

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(server.answer(self.headers, body))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Sink(HookServer):
    """A receiver that answers 200 after ``delay`` s, or 503 with probability ``fail_rate``.

    Records, per ``webhook-id``, the monotonic time of the first 2xx and how many 2xx;
    with ``keep_bodies``, also the body of the first 2xx (``first_body``).
    """

    def __init__(
        self, delay: float = 0.0, fail_rate: float = 0.0, seed: int = 7, keep_bodies: bool = False
    ) -> None:
        self.delay, self.fail_rate = delay, fail_rate
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.first_ok: dict[str, float] = {}
        self.ok_count: dict[str, int] = {}
        self.keep_bodies = keep_bodies
        self.first_body: dict[str, bytes] = {}
        self.failed = 0
        super().__init__()

    def answer(self, headers: Message, body: bytes) -> int:
        if self.delay:
            time.sleep(self.delay)
        return self._decide(headers.get("webhook-id", ""), body)

    def _decide(self, webhook_id: str, body: bytes = b"") -> int:
        with self.lock:
            if self.random.random() < self.fail_rate:
                self.failed += 1
                return 503
            if self.keep_bodies:
                self.first_body.setdefault(webhook_id, body)
            self.first_ok.setdefault(webhook_id, time.monotonic())
            self.ok_count[webhook_id] = self.ok_count.get(webhook_id, 0) + 1
            return 200


class Stack:
    """Redis + gunicorn web + N workers, all on this machine, all stopped by ``close()``
    (but a ``redis`` passed in, which the caller stops)."""

    def __init__(
        self,
        rules: str,
        workers: int = 1,
        env: dict | None = None,
        web_workers: int = 2,
        worker_loglevel: str = "WARNING",
        redis: EmbeddedRedis | None = None,
    ) -> None:
        self.worker_loglevel = worker_loglevel
        self.dir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        # a Redis given by the caller is the caller's to stop; the stack starts its own else
        self.own_redis = redis is None
        self.redis = redis or EmbeddedRedis(self.dir / "redis").start()
        (self.dir / "rules.yaml").write_text(rules)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        self.env.update(
            {
                "RELAY_REDIS_URL": self.redis.url,
                "RELAY_LOG_FORMAT": "json",
                "RELAY_RULES": str(self.dir / "rules.yaml"),
                # like the baselines, relay is measured without callback authentication
                "RELAY_ALLOW_UNAUTHENTICATED": "1",
                "WEB_CONCURRENCY": str(web_workers),
                **(env or {}),
            }
        )
        self.port = free_port()
        self.web = self._spawn("web", web_argv("127.0.0.1", self.port))
        self.workers = [self.start_worker(i) for i in range(workers)]
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/webex-connect"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the process keeps it
        return subprocess.Popen(
            argv,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self, index: int) -> subprocess.Popen:
        return self._spawn(
            f"worker{index}",
            worker_argv(
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"bench{index}-{time.time_ns()}@%h",
                loglevel=self.worker_loglevel,
            ),
        )

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(
                    self.url.replace("/webhooks/webex-connect", "/readyz"), timeout=1
                ).ok:
                    time.sleep(2)  # workers connect
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"relay did not start; see {self.dir}")

    def kill_worker(self, index: int) -> None:
        os.killpg(self.workers[index].pid, signal.SIGKILL)
        self.workers[index].wait()

    def close(self) -> None:
        for process in [self.web, *self.workers]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [self.web, *self.workers]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if self.own_redis:
            self.redis.stop()


def steady_post(
    url: str, rate: float, seconds: float, payload: Callable[[int], dict], threads: int = 16
) -> tuple[dict[str, float], list[float], int]:
    """POST ``payload(i)`` at ``rate``/s for ``seconds``: (accepted id → post time,
    request latencies, rejected count)."""
    accepted: dict[str, float] = {}
    latencies: list[float] = []
    rejected = [0]
    lock = threading.Lock()
    total = int(rate * seconds)
    start = time.monotonic()
    counter = iter(range(total))

    def run() -> None:
        session = requests.Session()
        for i in counter:
            due = start + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent = time.monotonic()
            try:
                answer = session.post(
                    url,
                    data=json.dumps(payload(i)),
                    timeout=10,
                    headers={"Content-Type": "application/json"},
                )
                ok = answer.status_code == 200
            except requests.RequestException:
                ok = False
            took = time.monotonic() - sent
            with lock:
                latencies.append(took)
                if ok:
                    for event_id in answer.json()["accepted"]:
                        accepted[event_id] = sent
                else:
                    rejected[0] += 1

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return accepted, latencies, rejected[0]


class Gunicorn:
    """Another WSGI app (``module:name``) under gunicorn with the settings of the module
    ``config`` (relay's, ``relay.web.gunicorn_conf``, unless given) on a free port;
    ``close()`` stops it."""

    def __init__(
        self, app: str, env: dict, log: Path, config: str = "relay.web.gunicorn_conf"
    ) -> None:
        self.port = free_port()
        self.log = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                app,
                "-c",
                f"python:{config}",
                "--bind",
                f"127.0.0.1:{self.port}",
            ],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/webex-connect"

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                requests.get(f"http://127.0.0.1:{self.port}/", timeout=1)  # any answer will do
                return
            except requests.RequestException:
                time.sleep(0.2)
        self.close()
        raise RuntimeError(f"gunicorn did not start; see {self.log.name}")

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# -- what processes use, from /proc ---------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, ()))
    return found


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (``VmHWM``, ``VmRSS`` …); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (with reaped children)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue
    return total / _TICK
