"""End to end: from POST to relay until the sink answered the delivery, against two
hand-written relays.

A private Redis, relay's web under gunicorn (the Procfile's settings), ``workers`` Celery
worker processes (``celery -A relay.worker worker``, the Procfile's command, pool and
concurrency from RELAY_WORKER_POOL / RELAY_WORKER_CONCURRENCY, ``intake_threads`` intake
threads), and a local HTTP sink that takes ``sink_delay`` s per request. The rules send
every event to the sink, through one of three routes (failures, inbound, the default), so
each event is one delivery whose ``webhook-id`` is ``<event id>:hook``.

- throughput: ``rounds`` rounds; in each, one burst of ``burst`` unique seed payloads
  POSTed as fast as ``concurrency`` connections go through each side in turn — relay and
  the ``baselines`` of :mod:`bench.naive` (``careful``: a session per thread, acks late,
  as many worker threads as relay's intake, a socket per web process; ``careless``:
  ``requests.post``, acks early) — the order reversed every other round, each side
  started afresh on the same Redis and sink with the same process counts and stopped
  after its burst. events/s = deliveries / (last delivery − first POST); the median of
  the rounds with their spread, relay ÷ each baseline as the median of the rounds'
  ratios; CPU ms per delivered event by role (web, worker, Redis, the sink's process,
  the load generator), the median of the rounds;
- the careful relay's thread curve (``threads``: worker threads per process, one burst
  each) and relay's (``intake_sweep``: RELAY_WORKER_INTAKE_THREADS): events/s and worker
  CPU per event by thread count;
- latency: relay at ``rate`` events/s for ``seconds`` (open loop); POST sent → sink
  answered 2xx, so it includes the ingest and the sink's own delay;
- loss: every id relay accepted (200) in a burst or the steady phase must reach the sink
  within ``drain`` s; also counted: repeated deliveries of one ``webhook-id`` and dead
  letters.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
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
#: relay's default RELAY_WORKER_INTAKE_THREADS (the threads that make first attempts); the
#: stack sets it, and the careful relay's worker gets as many threads
INTAKE_THREADS = 64

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


def stack_env(
    worker_concurrency: int, web_threads: int, intake_threads: int = INTAKE_THREADS
) -> dict:
    return {
        "RELAY_WORKER_POOL": WORKER_POOL,
        "RELAY_WORKER_CONCURRENCY": str(worker_concurrency),
        "RELAY_WORKER_INTAKE_THREADS": str(intake_threads),
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
    intake_threads: int = INTAKE_THREADS,
) -> Stack:
    """The e2e stack (rules → the sink), once every Celery worker said it is ready.

    Its processes keep their Prometheus files in a directory of their own (removed by
    :func:`stop_stack`; a Celery worker does not remove the one it makes itself).
    """
    metrics_dir = tempfile.mkdtemp(prefix="relay-bench-metrics-")
    env = {
        **stack_env(worker_concurrency, web_threads, intake_threads),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }
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


def start_side(
    side: str,
    redis_server: EmbeddedRedis,
    sink: Sink,
    directory: Path,
    o: dict,
) -> tuple[Stack | NaiveStack, int, object]:
    """Start one side of a round (``relay`` or a :mod:`bench.naive` variant) on the shared
    Redis: the stack, the port its web listens on, and ``cpu()`` (CPU seconds by role)."""
    if side == "relay":
        stack = start_stack(
            sink,
            o["workers"],
            o["worker_concurrency"],
            o["web_concurrency"],
            o["web_threads"],
            redis_server=redis_server,
            intake_threads=o["intake_threads"],
        )
        return stack, stack.port, lambda: cpu_by_role(stack)
    naive = NaiveStack(
        redis_server.url,
        sink.url,
        workers=o["workers"],
        concurrency=naive_threads(side, o),
        pool=WORKER_POOL,
        web_workers=o["web_concurrency"],
        web_threads=o["web_threads"],
        directory=directory,
        variant=side,
    )
    return naive, naive.port, lambda: cpu_by_role(naive, redis_server.process.pid)


def stop_side(stack: Stack | NaiveStack, keep: bool) -> None:
    if isinstance(stack, Stack):
        stop_stack(stack, keep)
    else:
        stack.close()


def naive_threads(side: str, o: dict) -> int:
    """The careful relay's worker gets as many threads as relay's intake; the careless one
    relay's Celery concurrency, as it always had."""
    if side == "careful":
        return o.get("careful_threads") or o["intake_threads"]
    return o["worker_concurrency"]


def side_config(side: str, o: dict) -> dict:
    """How a side's processes run (the table's title)."""
    if side == "relay":
        return {
            "web": "gunicorn -c python:relay.web.gunicorn_conf "
            f"{o['web_concurrency']} × {o['web_threads']} (a socket per process)",
            "worker": f"celery -A relay.worker worker, {WORKER_POOL} × "
            f"{o['worker_concurrency']} + {o['intake_threads']} intake threads",
            "workers": o["workers"],
        }
    threads = naive_threads(side, o)
    return {
        "web": f"gunicorn bench.naive:app --worker-class gthread --workers "
        f"{o['web_concurrency']} --threads {o['web_threads']}"
        + (" --reuse-port" if side == "careful" else ""),
        "worker": f"NAIVE_VARIANT={side} celery -A bench.naive:celery worker --pool "
        f"{WORKER_POOL} --concurrency {threads}",
        "workers": o["workers"],
    }


def spread(values: list[float]) -> dict:
    """The median of ``values`` with their min and max (NaN when there are none)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(bursts: list[dict]) -> dict:
    """One side's bursts: each figure as the median of the rounds (events/s also with its
    spread), CPU per event by role as medians, and the sums over the bursts."""
    eps = spread([b["events_per_s"] for b in bursts])
    roles = bursts[0]["cpu_ms_per_event"] if bursts else {}
    return {
        "rounds": len(bursts),
        "events_per_s": eps["median"],
        "events_per_s_spread": eps,
        "each_events_per_s": [b["events_per_s"] for b in bursts],
        "accepted": sum(b["accepted"] for b in bursts),
        "posted": sum(b["posted"] for b in bursts),
        "not_200": sum(b["not_200"] for b in bursts),
        "delivered": sum(b["delivered"] for b in bursts),
        "repeats": sum(b["repeats"] for b in bursts),
        "lost": sum(b.get("lost", 0) for b in bursts),
        "ingest_s": statistics.median(b["ingest_s"] for b in bursts),
        "ingest_rps": statistics.median(b["ingest_rps"] for b in bursts),
        "span_s": statistics.median(b["span_s"] for b in bursts),
        "cpu_ms_per_event": {
            role: statistics.median(b["cpu_ms_per_event"][role] for b in bursts) for role in roles
        },
    }


def side_burst(
    side: str,
    redis_server: EmbeddedRedis,
    sink: Sink,
    directory: Path,
    o: dict,
    progress=print,
) -> tuple[dict, dict[str, float]]:
    """One burst through a freshly started ``side``, stopped after: its figures (with
    ``lost``: accepted ids never delivered within the drain) and the accepted ids."""
    stack, port, cpu = start_side(side, redis_server, sink, directory, o)
    try:
        figures, ids, missing = burst_phase(
            port, cpu, sink, o["burst"], o["concurrency"], o["drain"], o["procs"]
        )
    finally:
        stop_side(stack, o["keep"])
    figures["lost"] = len(missing)
    progress(
        f"  e2e: {side}: delivered {figures['delivered']}/{figures['accepted']} in "
        f"{figures['span_s']:.1f}s → {figures['events_per_s']:.0f} events/s, worker "
        f"{figures['cpu_ms_per_event']['worker']:.2f} CPU ms/event"
    )
    return figures, ids


def run(
    burst: int = 10_000,
    rounds: int = 3,
    rate: float = 200.0,
    seconds: float = 20.0,
    concurrency: int = 16,
    workers: int = 2,
    worker_concurrency: int = 16,
    intake_threads: int = INTAKE_THREADS,
    web_concurrency: int = 2,
    web_threads: int = 4,
    sink_delay: float = 0.05,
    drain: float = 120.0,
    procs: int = 1,
    keep: bool = False,
    progress=print,
    on_stack=None,
    baselines: tuple[str, ...] = ("careful", "careless"),
    threads: tuple[int, ...] = (),
    intake_sweep: tuple[int, ...] = (),
) -> dict:
    """Throughput, latency and loss figures (see the module doc).

    ``on_stack(stack)`` is called after the load, before the stack stops (memory).
    """
    o = {
        "burst": burst,
        "concurrency": concurrency,
        "workers": workers,
        "worker_concurrency": worker_concurrency,
        "intake_threads": intake_threads,
        "web_concurrency": web_concurrency,
        "web_threads": web_threads,
        "drain": drain,
        "procs": procs,
        "keep": keep,
    }
    sink = Sink(delay=sink_delay)
    shared = Path(tempfile.mkdtemp(prefix="relay-bench-e2e-"))
    redis_server = EmbeddedRedis(shared / "redis").start()
    sides = ["relay", *baselines]
    out: dict = {
        "config": {
            "sink_delay_s": sink_delay,
            "burst": burst,
            "rounds": rounds,
            "rate": rate,
            "seconds": seconds,
            "workers": workers,
            "worker_concurrency": worker_concurrency,
            "intake_threads": intake_threads,
            "worker_pool": WORKER_POOL,
            "web_concurrency": web_concurrency,
            "web_threads": web_threads,
            "sides": {side: side_config(side, o) for side in sides},
        },
        "rounds": [],
    }
    accepted: dict[str, float] = {}
    try:
        for number in range(rounds):
            order = sides if number % 2 == 0 else sides[::-1]
            progress(f"  e2e: round {number + 1}/{rounds} ({' → '.join(order)}), bursts of {burst}")
            this: dict = {"order": order}
            for side in order:
                this[side], ids = side_burst(
                    side, redis_server, sink, shared / f"{side}{number}", o, progress
                )
                if side == "relay":
                    accepted.update(ids)
            out["rounds"].append(this)
        out["throughput"] = summarise([r["relay"] for r in out["rounds"]])
        out["baselines"] = {side: summarise([r[side] for r in out["rounds"]]) for side in baselines}
        # relay ÷ each baseline in each round (bursts next to each other): their median
        out["vs"] = {
            side: spread(
                [
                    r["relay"]["events_per_s"] / r[side]["events_per_s"]
                    if r[side]["events_per_s"]
                    else float("nan")
                    for r in out["rounds"]
                ]
            )
            for side in baselines
        }
        for side, ratio in out["vs"].items():
            progress(
                f"  e2e: relay ÷ {side} events/s = {ratio['median']:.2f}× "
                f"(rounds {ratio['min']:.2f}–{ratio['max']:.2f})"
            )
        if threads:
            out["thread_curve"] = thread_curve(
                "careful", threads, redis_server, sink, shared, o, progress
            )
        if intake_sweep:
            out["intake_curve"] = thread_curve(
                "relay", intake_sweep, redis_server, sink, shared, o, progress, accepted
            )
        stack = start_stack(
            sink,
            workers,
            worker_concurrency,
            web_concurrency,
            web_threads,
            redis_server=redis_server,
            intake_threads=intake_threads,
        )
        try:
            _steady(stack, sink, rate, seconds, drain, procs, progress, on_stack, out, accepted)
        finally:
            stop_stack(stack, keep)
        return out
    finally:
        redis_server.stop()
        sink.close()
        if not keep:
            shutil.rmtree(shared, ignore_errors=True)


def thread_curve(
    side: str,
    threads: tuple[int, ...],
    redis_server: EmbeddedRedis,
    sink: Sink,
    shared: Path,
    o: dict,
    progress=print,
    accepted: dict[str, float] | None = None,
) -> list[dict]:
    """``side`` (``careful``: its worker threads; ``relay``: its intake threads) with each
    number of threads per worker process in turn, one burst each: events/s and worker CPU
    per event, to show where more threads stop helping. The ids relay accepted are added
    to ``accepted`` (for the loss count)."""
    curve = []
    for count in threads:
        progress(f"  e2e: {side} with {count} threads per worker process")
        setting = {"careful_threads": count} if side == "careful" else {"intake_threads": count}
        figures, ids = side_burst(
            side,
            redis_server,
            sink,
            shared / f"{side}-threads{count}",
            {**o, **setting},
            progress,
        )
        if side == "relay" and accepted is not None:
            accepted.update(ids)
        curve.append(
            {
                "threads": count,
                "events_per_s": figures["events_per_s"],
                "worker_cpu_ms": figures["cpu_ms_per_event"]["worker"],
                "lost": figures["lost"],
            }
        )
    return curve


def _steady(
    stack: Stack,
    sink: Sink,
    rate: float,
    seconds: float,
    drain: float,
    procs: int,
    progress,
    on_stack,
    out: dict,
    accepted: dict[str, float],
) -> None:
    """relay at a steady ``rate`` for ``seconds`` (latency), then the loss over every id
    relay accepted in the bursts and here."""
    common = {
        "port": stack.port,
        "path": PATH,
        "templates": templates(),
        "collect": True,
        "procs": procs,
    }
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

    # loss: every id relay accepted (bursts and steady) must have reached the sink; one a
    # burst left undelivered when its stack stopped is taken over by the next relay stack
    missing = wait_delivered(sink, {f"{event_id}:hook" for event_id in accepted}, drain)
    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    dead = client.zcard("relay:dead")
    with sink.lock:
        repeats = sum(sink.ok_count.get(f"{event_id}:hook", 1) - 1 for event_id in accepted)
    lost = sorted(key.removesuffix(":hook") for key in missing)
    bursts = out.get("throughput", {})
    out["loss"] = {
        "accepted": len(accepted),
        "delivered": len(accepted) - len(lost),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "repeats": repeats,
        "dead_letters": dead,
        "sink_503s": sink.failed,
        "undelivered_after_drain": bursts.get("lost", 0) + len(missing_steady),
    }
    if on_stack is not None:
        on_stack(stack)
