"""The end-to-end baselines: the relay a team writes by hand, carefully or carelessly.

    NAIVE_VARIANT=careful NAIVE_REDIS_URL=redis://… NAIVE_SINK_URL=http://…/hook \\
        gunicorn bench.naive:app --worker-class gthread --workers 2 --threads 4 --reuse-port
    NAIVE_VARIANT=careful NAIVE_REDIS_URL=… NAIVE_SINK_URL=… \\
        celery -A bench.naive:celery worker --pool threads -c 64

- web: Flask, ``POST /webhooks/webex-connect`` (relay's path) parses the JSON body (an
  object or an array of them) and calls ``celery.send_task("naive.deliver", [payload])``
  per notification, then answers 200 ``{"accepted": [ids]}``;
- worker: one task, ``naive.deliver``, that POSTs the payload as JSON to the sink, with a
  ``webhook-id`` header (the notification's ``transid`` / ``tid`` + ``":hook"``, as
  relay's deliveries to the bench's ``hook`` destination are named), and retries on an
  error (Celery's ``autoretry_for``).

Two variants (``NAIVE_VARIANT``), both on Celery with Redis as broker, JSON, results
ignored:

- ``careful`` (the baseline relay is measured against): a ``requests.Session`` per worker
  thread (its connections kept alive), ``task_acks_late`` and
  ``task_reject_on_worker_lost`` (a task is acknowledged once it ran, so a worker killed
  mid-delivery loses nothing), and :class:`NaiveStack` gives it what relay's processes
  get: the worker ``--pool threads`` with as many threads as relay's intake
  (``RELAY_WORKER_INTAKE_THREADS``), and gunicorn with a listening socket per process
  (``--reuse-port``, as ``relay.web.gunicorn_conf``);
- ``careless`` (the baseline of relay's first README figures): ``requests.post`` for each
  delivery (a new TCP connection every time) and Celery's defaults otherwise (acks
  early: a task taken is acknowledged before it runs), one shared listening socket.

No validation, no dedupe, no rules, no dead letters, no metrics. It imports nothing from
``relay``: it is an independent program; :class:`NaiveStack` starts it (stdlib only, for
the bench).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
from celery import Celery
from flask import Flask, jsonify, request

VARIANTS = ("careful", "careless")
VARIANT = os.environ.get("NAIVE_VARIANT", "careful")
if VARIANT not in VARIANTS:
    raise SystemExit(f"NAIVE_VARIANT: {VARIANT!r} is not one of {', '.join(VARIANTS)}")
CAREFUL = VARIANT == "careful"
REDIS_URL = os.environ.get("NAIVE_REDIS_URL", "redis://127.0.0.1:6379/0")
SINK_URL = os.environ.get("NAIVE_SINK_URL", "http://127.0.0.1:9/hook")
QUEUE = "naive"
PATH = "/webhooks/webex-connect"

celery = Celery("naive", broker=REDIS_URL)
celery.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)
if CAREFUL:
    celery.conf.update(task_acks_late=True, task_reject_on_worker_lost=True)

_local = threading.local()


def session() -> requests.Session:
    """This thread's session (careful): its connections to the sink stay open."""
    current = getattr(_local, "session", None)
    if current is None:
        current = _local.session = requests.Session()
    return current


def event_id(payload: dict) -> str:
    """The notification's own id: ``transid`` of a receipt, ``tid`` of an inbound message."""
    note = payload.get("deliveryInfoNotification") if isinstance(payload, dict) else None
    if isinstance(note, dict) and note.get("transid"):
        return str(note["transid"])
    if isinstance(payload, dict) and payload.get("tid"):
        return str(payload["tid"])
    return uuid.uuid4().hex


@celery.task(
    name="naive.deliver",
    autoretry_for=(requests.RequestException,),
    retry_backoff=True,
    max_retries=5,
)
def deliver(payload: dict) -> None:
    post = session().post if CAREFUL else requests.post
    response = post(
        SINK_URL, json=payload, headers={"webhook-id": f"{event_id(payload)}:hook"}, timeout=5
    )
    response.raise_for_status()


app = Flask("naive")


@app.post(PATH)
def receive():
    body = request.get_json()
    notes = body if isinstance(body, list) else [body]
    for note in notes:
        celery.send_task("naive.deliver", args=[note])
    return jsonify(accepted=[event_id(note) for note in notes])


# -- starting it (the bench) -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NaiveStack:
    """The ``variant``'s web (gunicorn, gthread, ``web_workers`` × ``web_threads``; a
    listening socket per process for ``careful``) and ``workers`` Celery worker processes
    (``pool`` × ``concurrency``) on ``redis_url``, delivering to ``sink_url``; the
    constructor returns once the web answers and every worker is ready. Logs go to
    ``directory``; ``close()`` stops every process."""

    def __init__(
        self,
        redis_url: str,
        sink_url: str,
        workers: int,
        concurrency: int,
        pool: str,
        web_workers: int,
        web_threads: int,
        directory: str | os.PathLike | None = None,
        timeout: float = 60.0,
        variant: str = "careful",
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
        self.variant = variant
        self.dir = Path(directory or tempfile.mkdtemp(prefix="relay-bench-naive-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        self.env.update(
            {"NAIVE_REDIS_URL": redis_url, "NAIVE_SINK_URL": sink_url, "NAIVE_VARIANT": variant}
        )
        self.port = _free_port()
        root = Path(__file__).resolve().parent.parent
        self.web_argv = (
            ["gunicorn", "bench.naive:app", "--worker-class", "gthread"]
            + ["--workers", str(web_workers), "--threads", str(web_threads)]
            + ["--timeout", "30", "--keep-alive", "5", "--no-control-socket"]
            + (["--reuse-port"] if variant == "careful" else [])
        )
        self.worker_argv = ["celery", "-A", "bench.naive:celery", "worker"] + [
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
        ]
        self.web = self._spawn(
            "naive-web",
            [sys.executable, "-m", *self.web_argv, "--bind", f"127.0.0.1:{self.port}"],
            root,
        )
        self.workers = [
            self._spawn(
                f"naive-worker{i}",
                [sys.executable, "-m", *self.worker_argv, "--loglevel", "INFO"]
                + ["--queues", QUEUE, "--without-gossip", "--without-mingle"]
                + ["--without-heartbeat", "-n", f"naive{i}-{time.time_ns()}@%h"],
                root,
            )
            for i in range(workers)
        ]
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def _spawn(self, name: str, argv: list[str], cwd: Path) -> subprocess.Popen:
        with open(self.dir / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                argv,
                env=self.env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        logs = [self.dir / f"naive-worker{i}.log" for i in range(len(self.workers))]
        web_up = False
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in (self.web, *self.workers)):
                break
            if not web_up:
                try:
                    requests.get(f"http://127.0.0.1:{self.port}/", timeout=1)  # any answer
                    web_up = True
                except requests.RequestException:
                    pass
            if web_up and all(" ready." in log.read_text(errors="replace") for log in logs):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the naive relay did not start; see {self.dir}")

    def close(self) -> None:
        processes = [self.web, *self.workers]
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
