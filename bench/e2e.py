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
  ``drain`` s; also counted: repeated deliveries of one ``webhook-id`` and dead letters.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import redis

from bench import loadgen
from bench.common import Sink, Stack, cpu_seconds, percentile, process_tree
from bench.ingest import PATH, templates

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
    return {"RELAY_WORKER_CONCURRENCY": str(worker_concurrency), "WEB_THREADS": str(web_threads)}


def cpu_by_role(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by the web (gunicorn master + workers), the Celery workers,
    Redis, and this process (the sink's threads)."""
    workers = [pid for p in stack.workers for pid in process_tree(p.pid)]
    return {
        "web": cpu_seconds(process_tree(stack.web.pid)),
        "worker": cpu_seconds(workers),
        "redis": cpu_seconds([stack.redis.process.pid]),
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
) -> dict:
    """Throughput, latency and loss figures (see the module doc).

    ``on_stack(stack)`` is called after the load, before the stack stops (memory).
    """
    sink = Sink(delay=sink_delay)
    stack = start_stack(sink, workers, worker_concurrency, web_concurrency, web_threads)
    common = {
        "port": stack.port,
        "path": PATH,
        "templates": templates(),
        "collect": True,
        "procs": procs,
    }
    try:
        out: dict = {
            "config": {
                "workers": workers,
                "worker_concurrency": worker_concurrency,
                "sink_delay_s": sink_delay,
                "burst": burst,
                "rate": rate,
                "seconds": seconds,
            }
        }
        accepted: dict[str, float] = {}

        # throughput: a burst, as fast as the connections go
        progress(f"  e2e: burst of {burst} POSTs ({concurrency} connections) …")
        before = cpu_by_role(stack)
        result = loadgen.run_subprocess(
            {
                **common,
                "mode": "closed",
                "count": burst,
                "concurrency": concurrency,
                "nonce": os.urandom(4).hex(),
            }
        )
        posted = time.monotonic()
        ids = dict(result["accepted"])
        accepted.update(ids)
        keys = {f"{event_id}:hook" for event_id in ids}
        missing = wait_delivered(sink, keys, drain)
        with sink.lock:
            times = [sink.first_ok[key] for key in keys - missing]
        first = result["first_sent"]
        span = (max(times) - first) if times else float("nan")
        out["throughput"] = {
            "posted": result["sent"],
            "accepted": len(ids),
            "not_200": result["sent"] - result["ok"],
            "delivered": len(times),
            "ingest_s": posted - first,
            "ingest_rps": len(ids) / max(posted - first, 1e-9),
            "span_s": span,
            "events_per_s": len(times) / span if times else 0.0,
            "cpu_ms_per_event": _per_event(before, cpu_by_role(stack), len(times), result["cpu"]),
        }
        progress(
            f"  e2e: burst delivered {len(times)}/{len(ids)} in {span:.1f}s "
            f"→ {out['throughput']['events_per_s']:.0f} events/s"
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
            repeats = sum(n - 1 for n in sink.ok_count.values())
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
    finally:
        stop_stack(stack, keep)
        sink.close()
