"""Memory: peak RSS (``VmHWM`` in /proc/<pid>/status) of relay's processes after load.

- web: each gunicorn worker (the master's children; their children too, if any), and the
  master for context;
- worker: each Celery worker process and its children (the default ``threads`` pool has
  none; a ``prefork`` pool's children are listed too).

Read after the load, so the high-water marks include it. ``python -m bench memory`` puts
its own load on a fresh stack first: a closed-loop burst at relay with the workers running
(routing and delivering to the sink as it goes), then waits for the deliveries.
"""

from __future__ import annotations

import os
import time

from bench import loadgen
from bench.common import Sink, Stack, process_tree, status_kib

MIB = 1024.0


def _peaks(pids: list[int]) -> dict[str, float]:
    return {str(pid): status_kib(pid, "VmHWM") / MIB for pid in pids}


def snapshot(stack: Stack, label: str = "") -> dict:
    """Peak RSS (MiB) of the stack's gunicorn workers and master, and of its Celery
    worker processes (with their children)."""
    master = stack.web.pid
    web_tree = process_tree(master)
    web = _peaks([pid for pid in web_tree if pid != master])
    out: dict = {
        "label": label,
        "web_workers": web,
        "web_master": status_kib(master, "VmHWM") / MIB,
        "web_peak_mib": max(web.values(), default=0.0),
    }
    celery: dict[str, float] = {}
    for process in stack.workers:
        if process.poll() is None:
            celery.update(_peaks(process_tree(process.pid)))
    if celery:
        out["celery"] = celery
        out["worker_peak_mib"] = max(celery.values())
    return out


def merge(*snapshots: dict) -> dict:
    """The highest web and worker figures over several snapshots (e.g. two stacks)."""
    out: dict = {"snapshots": list(snapshots)}
    webs = [s["web_peak_mib"] for s in snapshots if s.get("web_peak_mib")]
    workers = [s["worker_peak_mib"] for s in snapshots if s.get("worker_peak_mib")]
    if webs:
        out["web_peak_mib"] = max(webs)
    if workers:
        out["worker_peak_mib"] = max(workers)
    return out


def run(
    seconds: float = 10.0,
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
) -> dict:
    from bench.e2e import start_stack, stop_stack, wait_delivered
    from bench.ingest import PATH, templates

    sink = Sink(delay=sink_delay)
    stack = start_stack(sink, workers, worker_concurrency, web_concurrency, web_threads)
    try:
        progress(f"  memory: closed loop at relay for {seconds:g}s, workers running")
        result = loadgen.run_subprocess(
            {
                "mode": "closed",
                "port": stack.port,
                "path": PATH,
                "templates": templates(),
                "concurrency": concurrency,
                "seconds": seconds,
                "collect": True,
                "procs": procs,
                "nonce": os.urandom(4).hex(),
            }
        )
        keys = {f"{event_id}:hook" for event_id, _ in result["accepted"]}
        start = time.monotonic()
        missing = wait_delivered(sink, keys, drain)
        progress(
            f"  memory: {len(keys) - len(missing)}/{len(keys)} delivered in "
            f"{time.monotonic() - start:.1f}s after the load"
        )
        snap = snapshot(stack, "after a closed-loop load with workers running")
        return merge(snap)
    finally:
        stop_stack(stack, keep)
        sink.close()
