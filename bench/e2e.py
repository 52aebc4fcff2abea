"""End to end: from POST to relay until the sink answered the delivery.

A private Redis, relay's web under gunicorn (the Procfile's settings), ``workers`` Celery
worker processes (``celery -A relay.worker worker``, the Procfile's command, pool and
concurrency from RELAY_WORKER_POOL / RELAY_WORKER_CONCURRENCY), and a local HTTP sink that
takes ``sink_delay`` s per request. The rules send every event to the sink, through one of
three routes (failures, inbound, the default), so each event is one delivery whose
``webhook-id`` is ``<event id>:hook``.

- throughput: ``burst`` unique seed payloads POSTed as fast as ``concurrency``
  connections go; events/s = deliveries / (last delivery − first POST);
- latency: ``rate`` events/s for ``seconds`` (open loop); POST sent → sink answered 2xx,
  so it includes the ingest and the sink's own delay;
- loss: every id relay accepted (200) in either phase must reach the sink within
  ``drain`` s; also counted: repeated deliveries of one ``webhook-id`` and dead letters;
- naive (unless ``naive=False``): first, the same burst through :mod:`bench.naive` (a
  Flask ``send_task`` per notification, one Celery task that ``requests.post``s it) on
  the same Redis, the same sink and the same process counts (gunicorn workers × threads,
  Celery worker processes × pool and concurrency), stopped before relay starts; its
  events/s and CPU per event by role, and relay's events/s ÷ naive's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import redis

from bench import loadgen
from bench.common import EmbeddedRedis, Sink, Stack, cpu_seconds, percentile, process_tree
from bench.ingest import PATH, templates
from bench.naive import NaiveStack

#: relay's default pool (RELAY_WORKER_POOL); the stack sets it, and the naive worker uses it
WORKER_POOL = "threads"

RULES = """
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 5s
    retry: {{attempts: 20, initial: 200ms, max: 5s}}
routes:
  - name: failures
    match: {{kind: delivery_receipt, status: [Failed, Un-Delivered]}}
    to: [hook]
  - name: inbound
    match: {{kind: inbound_message}}
    to: [hook]
default: {{to: [hook]}}
"""


def stack_env(worker_concurrency: int, web_threads: int) -> dict:
    return {
        "RELAY_WORKER_POOL": WORKER_POOL,
        "RELAY_WORKER_CONCURRENCY": str(worker_concurrency),
        "WEB_THREADS": str(web_threads),
    }


def cpu_by_role(stack: Stack | NaiveStack, redis_pid: int | None = None) -> dict[str, float]:
    """CPU seconds used so far by the web (gunicorn master + workers), the Celery workers,
    Redis, and this process (the sink's threads)."""
    workers = [pid for p in stack.workers for pid in process_tree(p.pid)]
    return {
        "web": cpu_seconds(process_tree(stack.web.pid)),
        "worker": cpu_seconds(workers),
        "redis": cpu_seconds([redis_pid or stack.redis.process.pid]),
        "sink": cpu_seconds([os.getpid()]),
    }


def _per_event(before: dict, after: dict, events: int, generator: float) -> dict:
    used = {role: (after[role] - before[role]) / max(events, 1) * 1000 for role in before}
    used["generator"] = generator / max(events, 1) * 1000
    return used


def start_stack(
    sink: Sink,
    workers: int,
    worker_concurrency: int,
    web_concurrency: int,
    web_threads: int,
    timeout: float = 60.0,
    redis_server: EmbeddedRedis | None = None,
) -> Stack:
    """The e2e stack (rules → the sink), once every Celery worker said it is ready.

    Its processes keep their Prometheus files in a directory of their own (removed by
    :func:`stop_stack`; a Celery worker does not remove the one it makes itself).
    """
    metrics_dir = tempfile.mkdtemp(prefix="relay-bench-metrics-")
    env = {**stack_env(worker_concurrency, web_threads), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    try:
        stack = Stack(
            RULES.format(url=sink.url),
            workers=workers,
            web_workers=web_concurrency,
            env=env,
            worker_loglevel="INFO",
            redis=redis_server,
        )
    except BaseException:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    stack.metrics_dir = metrics_dir
    deadline = time.monotonic() + timeout
    logs = [stack.dir / f"worker{i}.log" for i in range(workers)]
    while not all(" ready." in log.read_text(errors="replace") for log in logs):
        if time.monotonic() > deadline or any(p.poll() is not None for p in stack.workers):
            stop_stack(stack, keep=True)
            raise RuntimeError(f"Celery workers did not start; see {stack.dir}")
        time.sleep(0.2)
    return stack


def stop_stack(stack: Stack, keep: bool = False) -> None:
    """Stop every process of the stack; remove its directories unless ``keep``."""
    stack.close()
    shutil.rmtree(stack.metrics_dir, ignore_errors=True)
    if not keep:
        shutil.rmtree(stack.dir, ignore_errors=True)


def wait_delivered(sink: Sink, keys: set[str], timeout: float) -> set[str]:
    """Wait until the sink answered 2xx for every key (or ``timeout`` s); the missing ones."""
    deadline = time.monotonic() + timeout
    while True:
        with sink.lock:
            missing = {key for key in keys if key not in sink.first_ok}
        if not missing or time.monotonic() >= deadline:
            return missing
        keys = missing
        time.sleep(0.1)


def burst_phase(
    port: int, cpu, sink: Sink, burst: int, concurrency: int, drain: float, procs: int
) -> tuple[dict, dict[str, float], set[str]]:
    """``burst`` unique seed payloads POSTed to ``port`` on ``concurrency`` connections,
    then wait (≤ ``drain`` s) for the sink to answer each ``<id>:hook``: the throughput
    figures (``cpu()`` gives CPU seconds by role), the accepted ids, the missing keys."""
    before = cpu()
    result = loadgen.run_subprocess(
        {
            "port": port,
            "path": PATH,
            "templates": templates(),
            "collect": True,
            "procs": procs,
            "mode": "closed",
            "count": burst,
            "concurrency": concurrency,
            "nonce": os.urandom(4).hex(),
        }
    )
    posted = time.monotonic()
    ids = dict(result["accepted"])
    keys = {f"{event_id}:hook" for event_id in ids}
    missing = wait_delivered(sink, keys, drain)
    with sink.lock:
        times = [sink.first_ok[key] for key in keys - missing]
        repeats = sum(sink.ok_count[key] - 1 for key in keys - missing)
    first = result["first_sent"]
    span = (max(times) - first) if times else float("nan")
    figures = {
        "posted": result["sent"],
        "accepted": len(ids),
        "not_200": result["sent"] - result["ok"],
        "delivered": len(times),
        "repeats": repeats,
        "ingest_s": posted - first,
        "ingest_rps": len(ids) / max(posted - first, 1e-9),
        "span_s": span,
        "events_per_s": len(times) / span if times else 0.0,
        "cpu_ms_per_event": _per_event(before, cpu(), len(times), result["cpu"]),
    }
    return figures, ids, missing


def naive_phase(
    redis_server: EmbeddedRedis,
    sink: Sink,
    directory: Path,
    burst: int,
    concurrency: int,
    workers: int,
    worker_concurrency: int,
    web_concurrency: int,
    web_threads: int,
    drain: float,
    procs: int,
    progress=print,
) -> dict:
    """The burst through :mod:`bench.naive` with relay's process counts (module doc)."""
    progress(
        f"  e2e: naive baseline ({web_concurrency} × {web_threads} gthread, {workers} Celery "
        f"worker(s) × {worker_concurrency} {WORKER_POOL}): burst of {burst} POSTs …"
    )
    naive = NaiveStack(
        redis_server.url,
        sink.url,
        workers=workers,
        concurrency=worker_concurrency,
        pool=WORKER_POOL,
        web_workers=web_concurrency,
        web_threads=web_threads,
        directory=directory,
    )
    try:
        figures, ids, missing = burst_phase(
            naive.port,
            lambda: cpu_by_role(naive, redis_server.process.pid),
            sink,
            burst,
            concurrency,
            drain,
            procs,
        )
    finally:
        naive.close()
    figures["lost"] = len(missing)
    figures["config"] = {
        "web": f"gunicorn bench.naive:app --worker-class gthread --workers {web_concurrency} "
        f"--threads {web_threads}",
        "worker": f"celery -A bench.naive:celery worker --pool {WORKER_POOL} "
        f"--concurrency {worker_concurrency}",
        "workers": workers,
    }
    progress(
        f"  e2e: naive burst delivered {figures['delivered']}/{figures['accepted']} in "
        f"{figures['span_s']:.1f}s → {figures['events_per_s']:.0f} events/s"
    )
    return figures


def run(
    burst: int = 5000,
    rate: float = 100.0,
    seconds: float = 20.0,
    concurrency: int = 16,
    workers: int = 1,
    worker_concurrency: int = 32,
    web_concurrency: int = 2,
    web_threads: int = 4,
    sink_delay: float = 0.05,
    drain: float = 120.0,
    procs: int = 1,
    keep: bool = False,
    progress=print,
    on_stack=None,
    naive: bool = True,
) -> dict:
    """Throughput, latency and loss figures (see the module doc).

    ``on_stack(stack)`` is called after the load, before the stack stops (memory).
    """
    sink = Sink(delay=sink_delay)
    shared = Path(tempfile.mkdtemp(prefix="relay-bench-e2e-"))
    redis_server = EmbeddedRedis(shared / "redis").start()
    stack = None
    try:
        baseline = None
        if naive:
            baseline = naive_phase(
                redis_server,
                sink,
                shared / "naive",
                burst,
                concurrency,
                workers,
                worker_concurrency,
                web_concurrency,
                web_threads,
                drain,
                procs,
                progress,
            )
        stack = start_stack(
            sink,
            workers,
            worker_concurrency,
            web_concurrency,
            web_threads,
            redis_server=redis_server,
        )
        out = _run_relay(
            stack, sink, burst, rate, seconds, concurrency, drain, procs, progress, on_stack
        )
        out["config"].update(
            {
                "workers": workers,
                "worker_concurrency": worker_concurrency,
                "worker_pool": WORKER_POOL,
                "web_concurrency": web_concurrency,
                "web_threads": web_threads,
            }
        )
        if baseline is not None:
            out["naive"] = baseline
            relay_eps = out["throughput"]["events_per_s"]
            naive_eps = baseline["events_per_s"]
            out["relay_vs_naive"] = relay_eps / naive_eps if naive_eps else float("nan")
            progress(f"  e2e: relay ÷ naive events/s = {out['relay_vs_naive']:.2f}×")
        return out
    finally:
        if stack is not None:
            stop_stack(stack, keep)
        redis_server.stop()
        sink.close()
        if not keep:
            shutil.rmtree(shared, ignore_errors=True)


def _run_relay(
    stack: Stack,
    sink: Sink,
    burst: int,
    rate: float,
    seconds: float,
    concurrency: int,
    drain: float,
    procs: int,
    progress,
    on_stack,
) -> dict:
    common = {
        "port": stack.port,
        "path": PATH,
        "templates": templates(),
        "collect": True,
        "procs": procs,
    }
    out: dict = {
        "config": {
            "sink_delay_s": sink.delay,
            "burst": burst,
            "rate": rate,
            "seconds": seconds,
        }
    }
    accepted: dict[str, float] = {}

    # throughput: a burst, as fast as the connections go
    progress(f"  e2e: burst of {burst} POSTs ({concurrency} connections) …")
    out["throughput"], ids, missing = burst_phase(
        stack.port, lambda: cpu_by_role(stack), sink, burst, concurrency, drain, procs
    )
    accepted.update(ids)
    th = out["throughput"]
    progress(
        f"  e2e: burst delivered {th['delivered']}/{th['accepted']} in {th['span_s']:.1f}s "
        f"→ {th['events_per_s']:.0f} events/s"
    )
    # latency at a steady rate
    progress(f"  e2e: steady {rate:g}/s for {seconds:g}s …")
    result = loadgen.run_subprocess(
        {
            **common,
            "mode": "open",
            "rate": rate,
            "seconds": seconds,
            "concurrency": 32,
            "nonce": os.urandom(4).hex(),
        }
    )
    ids = dict(result["accepted"])
    accepted.update(ids)
    keys = {f"{event_id}:hook" for event_id in ids}
    missing_steady = wait_delivered(sink, keys, drain)
    with sink.lock:
        e2e = [
            sink.first_ok[f"{event_id}:hook"] - sent
            for event_id, sent in ids.items()
            if f"{event_id}:hook" in sink.first_ok
        ]
    out["latency"] = {
        "posted": result["sent"],
        "accepted": len(ids),
        "delivered": len(e2e),
        "not_200": result["sent"] - result["ok"],
        "ingest_p99_ms": percentile(result["latencies"], 99) * 1000,
        "p50_ms": percentile(e2e, 50) * 1000,
        "p99_ms": percentile(e2e, 99) * 1000,
        "max_ms": max(e2e) * 1000 if e2e else float("nan"),
    }
    progress(
        f"  e2e: steady p50 {out['latency']['p50_ms']:.0f} ms, "
        f"p99 {out['latency']['p99_ms']:.0f} ms"
    )

    # loss: every accepted id must have reached the sink
    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    dead = client.zcard("relay:dead")
    with sink.lock:
        delivered = {key for key in sink.first_ok}
        repeats = sum(sink.ok_count.get(f"{event_id}:hook", 1) - 1 for event_id in accepted)
    lost = [event_id for event_id in accepted if f"{event_id}:hook" not in delivered]
    out["loss"] = {
        "accepted": len(accepted),
        "delivered": len(accepted) - len(lost),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "repeats": repeats,
        "dead_letters": dead,
        "sink_503s": sink.failed,
        "undelivered_after_drain": len(missing) + len(missing_steady),
    }
    if on_stack is not None:
        on_stack(stack)
    return out
