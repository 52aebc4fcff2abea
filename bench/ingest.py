"""Ingest: relay's webhook endpoint against three baselines on the same gunicorn settings.

One private Redis; relay's web (``relay.web.wsgi:app``) with no Celery worker running, so its
queue fills like the baselines' do and no routing competes for the CPU; and the baselines
of :mod:`bench.baselines` (a bare ``LPUSH`` as plain WSGI, as relay's endpoint is; the same
``LPUSH`` in Flask; a hand-written Celery ``delay()``), each under
``gunicorn -c python:bench.gunicorn_conf`` (relay's settings: the same WEB_CONCURRENCY and
WEB_THREADS, worker class and a listening socket per process, without relay's per-process
rules watcher and traces). Every POST is one of the seed payloads
(tests/fixtures/webex-connect, in turn) made unique (``transid`` / ``tid``), so relay's
dedupe never short-circuits.

- saturation: closed loop, ``concurrency`` keep-alive connections, ``seconds`` per target
  split over ``rounds`` rounds that rotate the order of the targets (each goes first in
  turn: a busy machine hurts them alike), each after a ``warmup``;
- open loop: ``rate`` requests/s, ``open_seconds`` per target split over the same number
  of rotating rounds, latency from when each request was due; the p99 of each round, and
  their median.

For each: requests/s (200s only), p50/p99 latency, non-200 answers, and the CPU the
server's processes (gunicorn master + workers) and Redis used per request; relay ÷ each
LPUSH floor per round (next to each other), and the median of those.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench import loadgen
from bench.common import Gunicorn, Stack, cpu_seconds, percentile, process_tree, spread

SEEDS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "webex-connect"
PATH = "/webhooks/webex-connect"
TARGETS = ("relay", "lpush", "lpush_flask", "delay")
#: the apps of :mod:`bench.baselines`
BASELINES = TARGETS[1:]

RULES = """
version: 1
destinations:
  trace: {type: log}
routes:
  - {name: all, to: [trace]}
"""


def templates() -> list[str]:
    """The seed payloads, each with a ``@SEQ@`` in its ``transid`` (receipts) or ``tid``
    (inbound messages), as compact JSON."""
    out = []
    for path in sorted(SEEDS.glob("*.json")):
        payload = json.loads(path.read_text())
        if "deliveryInfoNotification" in payload:
            note = payload["deliveryInfoNotification"]
            note["transid"] = f"{note.get('transid', '')}-{loadgen.TOKEN}"
        else:
            payload["tid"] = f"{payload.get('tid', '')}-{loadgen.TOKEN}"
        out.append(json.dumps(payload, separators=(",", ":")))
    return out


@dataclass
class Server:
    name: str
    port: int
    pid: int  # the gunicorn master


def summary(result: dict, seconds: float, cpu: dict | None = None) -> dict:
    """requests/s (200s), latency percentiles (ms), answers that were not 200, errors."""
    lat = result["latencies"]
    out = {
        "rps": result["ok"] / seconds if seconds else 0.0,
        "ok": result["ok"],
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
        "not_200": sum(n for code, n in result["statuses"].items() if code != "200"),
        "errors": sum(result["errors"].values()),
        "statuses": result["statuses"],
        "generator_cpu_share": result["cpu"] / max(seconds, 1e-9),
        "connections": result["connections"],
    }
    if "achieved_rate" in result:
        out["achieved_rate"] = result["achieved_rate"]
        out["queued_at_end"] = result["queued_at_end"]
        out["abandoned"] = result["abandoned"]
    if cpu:
        done = max(result["answered"], 1)  # the CPU was used for warm-up answers too
        out["server_cpu_ms_per_req"] = cpu["server"] / done * 1000
        out["redis_cpu_ms_per_req"] = cpu["redis"] / done * 1000
    return out


def _drive(server: Server, redis_pid: int, spec: dict) -> tuple[dict, dict]:
    """Run ``spec`` against ``server``; also the CPU seconds its processes and Redis used."""
    spec = {
        **spec,
        "port": server.port,
        "path": PATH,
        "templates": templates(),
        "nonce": os.urandom(4).hex(),
    }
    tree = process_tree(server.pid)
    before = cpu_seconds(tree), cpu_seconds([redis_pid])
    result = loadgen.run_subprocess(spec)
    tree = process_tree(server.pid)
    cpu = {"server": cpu_seconds(tree) - before[0], "redis": cpu_seconds([redis_pid]) - before[1]}
    return result, cpu


def _merge(results: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    merged = {
        "latencies": [],
        "statuses": {},
        "errors": {},
        "ok": 0,
        "answered": 0,
        "cpu": 0.0,
        "connections": results[0][0]["connections"],
    }
    cpu = {"server": 0.0, "redis": 0.0}
    for result, used in results:
        merged["latencies"] += result["latencies"]
        merged["ok"] += result["ok"]
        merged["answered"] += result["answered"]
        merged["cpu"] += result["cpu"]
        for key in ("statuses", "errors"):
            for name, n in result[key].items():
                merged[key][name] = merged[key].get(name, 0) + n
        for key in cpu:
            cpu[key] += used[key]
    return merged, cpu


class Servers:
    """relay (no workers) + the baselines, on one private Redis; ``close()`` stops all."""

    def __init__(self, web_concurrency: int, web_threads: int, keep: bool = False) -> None:
        self.keep = keep
        env = {"WEB_THREADS": str(web_threads)}
        self.stack = Stack(RULES, workers=0, env=env, web_workers=web_concurrency)
        self.baselines: list[Gunicorn] = []
        try:
            base_env = {**self.stack.env, "BENCH_REDIS_URL": self.stack.redis.url}
            for name in BASELINES:
                self.baselines.append(
                    Gunicorn(
                        f"bench.baselines:{name}",
                        base_env,
                        self.stack.dir / f"{name}.log",
                        config="bench.gunicorn_conf",
                    )
                )
        except BaseException:
            self.close()
            raise
        self.servers = {"relay": Server("relay", self.stack.port, self.stack.web.pid)}
        for name, gunicorn in zip(BASELINES, self.baselines, strict=True):
            self.servers[name] = Server(name, gunicorn.port, gunicorn.process.pid)

    @property
    def redis_pid(self) -> int:
        return self.stack.redis.process.pid

    def close(self) -> None:
        for gunicorn in self.baselines:
            gunicorn.close()
        self.stack.close()
        if not self.keep:
            shutil.rmtree(self.stack.dir, ignore_errors=True)


def orders(rounds: int) -> list[tuple[str, ...]]:
    """The targets' order in each round: rotated by one each round, so each goes first
    (and last) in turn."""
    n = len(TARGETS)
    return [TARGETS[r % n :] + TARGETS[: r % n] for r in range(rounds)]


def _open_loop(
    servers: Servers,
    rate: float,
    seconds: float,
    rounds: int,
    connections: int,
    procs: int,
    progress,
) -> dict:
    """Each target at ``rate`` requests/s, ``seconds`` split over ``rounds`` rotating rounds:
    the summary of all its requests, with ``p99_rounds`` (each round's p99) and ``p99_spread``
    (their median, min and max)."""
    share = seconds / rounds
    runs: dict[str, list] = {name: [] for name in TARGETS}
    for order in orders(rounds):
        for name in order:
            spec = {
                "mode": "open",
                "rate": rate,
                "seconds": share,
                "concurrency": connections,
                "procs": procs,
            }
            runs[name].append(_drive(servers.servers[name], servers.redis_pid, spec))
    out = {}
    for name in TARGETS:
        merged, cpu = _merge(runs[name])
        for key in ("achieved_rate", "queued_at_end", "abandoned"):
            merged[key] = sum(result[key] for result, _ in runs[name])
        merged["achieved_rate"] /= rounds
        out[name] = summary(merged, seconds, cpu)
        out[name]["p99_rounds"] = [
            percentile(result["latencies"], 99) * 1000 for result, _ in runs[name]
        ]
        out[name]["p99_spread"] = spread(out[name]["p99_rounds"])
        p99 = out[name]["p99_spread"]
        progress(
            f"  ingest: open loop {rate:g}/s {name:<11} p99 {p99['median']:.1f} ms "
            f"(rounds {p99['min']:.1f}–{p99['max']:.1f})"
        )
    return out


def run(
    seconds: float = 10.0,
    concurrency: int = 16,
    rounds: int = 3,
    warmup: float = 1.0,
    rate: float = 1000.0,
    open_seconds: float | None = None,
    open_connections: int = 64,
    web_concurrency: int = 2,
    web_threads: int = 4,
    procs: int = 1,
    keep: bool = False,
    progress=print,
    on_servers=None,
) -> dict:
    """Saturation and open-loop figures for relay, lpush and delay (see the module doc).

    ``on_servers(servers)`` is called before they stop (the memory figures read them).
    """
    servers = Servers(web_concurrency, web_threads, keep)
    try:
        progress(
            f"  ingest: servers up (relay :{servers.servers['relay'].port}, "
            f"lpush :{servers.servers['lpush'].port}, "
            f"delay :{servers.servers['delay'].port})"
        )
        saturation: dict[str, list] = {name: [] for name in TARGETS}
        share = seconds / rounds
        for r, order in enumerate(orders(rounds)):
            for name in order:
                spec = {
                    "mode": "closed",
                    "concurrency": concurrency,
                    "seconds": share,
                    "warmup": warmup,
                    "procs": procs,
                }
                saturation[name].append(_drive(servers.servers[name], servers.redis_pid, spec))
                last = saturation[name][-1][0]
                progress(
                    f"  ingest: round {r + 1}/{rounds} {name:<11} {last['ok'] / share:7.0f} req/s"
                )
        out: dict = {"saturation": {}, "open": {}, "orders": orders(rounds)}
        for name in TARGETS:
            merged, cpu = _merge(saturation[name])
            out["saturation"][name] = summary(merged, seconds, cpu)
        # relay ÷ each LPUSH floor in each round (same round, next to each other): the median
        # of these is the steadier figure on a machine whose speed drifts between rounds
        for floor, key in (("lpush", "round_ratios"), ("lpush_flask", "round_ratios_flask")):
            out[key] = [
                relay[0]["ok"] / lpush[0]["ok"] if lpush[0]["ok"] else 0.0
                for relay, lpush in zip(saturation["relay"], saturation[floor], strict=True)
            ]
        out["open"] = _open_loop(
            servers, rate, open_seconds or seconds, rounds, open_connections, procs, progress
        )
        if on_servers is not None:
            on_servers(servers)
        return out
    finally:
        servers.close()
