"""Traces on against traces off, in one run: what exporting every span costs ingest and
end-to-end throughput, and what the off path costs.

- **ingest**: two relay web processes (gunicorn, the Procfile's settings, no worker: the
  inbox fills) on private Redis servers, one with traces off (no endpoint), one on at 100%
  sampling (``OTEL_TRACES_SAMPLER=always_on``) exporting to a local OTLP/HTTP receiver in
  this process; closed loop (the ingest bench's generator and seed payloads), ``rounds``
  rounds alternating which goes first, requests/s of each; the median of the rounds and
  their spread;
- **e2e**: the same with two Celery workers each, delivering to a local sink: bursts of
  ``burst`` POSTs, events/s from the first POST to the last delivery, alternating;
- **off path**: each function relay calls per request with traces off, timed in this
  process (ns per call), summed over what one accepted request calls, beside the web's
  CPU per request measured in the ingest rounds.

The receiver decodes each export (``ExportTraceServiceRequest``) and counts the spans, so
spans dropped on the way show.

    python -m bench tracing           # ≈ 4-5 minutes
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
import timeit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bench import e2e, ingest
from bench.common import Sink, Stack
from relay import tracing

SIDES = ("off", "on")


class Receiver:
    """OTLP/HTTP on 127.0.0.1: ``POST /v1/traces``, decoded; counts spans by name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: dict[str, int] = {}
        self.exports = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self):
        receiver = self
        answer = ExportTraceServiceResponse().SerializeToString()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.count(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def count(self, request: ExportTraceServiceRequest) -> None:
        names: dict[str, int] = {}
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    names[span.name] = names.get(span.name, 0) + 1
        with self.lock:
            self.exports += 1
            for name, n in names.items():
                self.spans[name] = self.spans.get(name, 0) + n

    def take(self) -> dict[str, int]:
        with self.lock:
            spans, self.spans = self.spans, {}
        return spans

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def side_env(side: str, receiver: Receiver) -> dict[str, str]:
    """No OTEL_* from outside; traces on at 100% sampling for the ``on`` side."""
    env = {key: "" for key in os.environ if key.startswith("OTEL_")}
    if side == "on":
        env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_SERVICE_NAME": "relay-bench",
            }
        )
    return env


def order(round_: int) -> tuple[str, ...]:
    return SIDES if round_ % 2 == 0 else SIDES[::-1]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ingest_phase(
    receiver: Receiver,
    rounds: int,
    seconds: float,
    warmup: float,
    concurrency: int,
    web_concurrency: int,
    web_threads: int,
    procs: int,
    progress,
) -> dict:
    stacks = {
        side: Stack(
            ingest.RULES,
            workers=0,
            env={"WEB_THREADS": str(web_threads), **side_env(side, receiver)},
            web_workers=web_concurrency,
        )
        for side in SIDES
    }
    rps: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    try:
        for round_ in range(rounds):
            for side in order(round_):
                stack = stacks[side]
                server = ingest.Server(side, stack.port, stack.web.pid)
                spec = {"mode": "closed", "concurrency": concurrency, "procs": procs}
                ingest._drive(server, stack.redis.process.pid, {**spec, "seconds": warmup})
                result, used = ingest._drive(
                    server, stack.redis.process.pid, {**spec, "seconds": seconds}
                )
                figures = ingest.summary(result, seconds, used)
                rps[side].append(figures["rps"])
                cpu[side].append(figures["server_cpu_ms_per_req"])
                progress(
                    f"  tracing: ingest round {round_ + 1}, traces {side:>3}: "
                    f"{figures['rps']:,.0f} req/s, web {figures['server_cpu_ms_per_req']:.2f} "
                    "ms CPU/req"
                )
        time.sleep(6)  # the batch processors' 5 s schedule: what is buffered leaves
    finally:
        for stack in stacks.values():
            stack.close()
            shutil.rmtree(stack.dir, ignore_errors=True)
    out = {side: {"rps": summary(rps[side]), "cpu_ms": summary(cpu[side])} for side in SIDES}
    out["rounds"] = {side: rps[side] for side in SIDES}
    out["spans"] = receiver.take()
    out["cost"] = 1 - out["on"]["rps"]["median"] / out["off"]["rps"]["median"]
    return out


def e2e_phase(
    receiver: Receiver,
    rounds: int,
    burst: int,
    concurrency: int,
    workers: int,
    worker_concurrency: int,
    web_concurrency: int,
    web_threads: int,
    drain: float,
    procs: int,
    progress,
) -> dict:
    sink = Sink()
    stacks: dict[str, Stack] = {}
    metrics = tempfile.mkdtemp(prefix="relay-bench-metrics-")
    try:
        for side in SIDES:
            env = {
                **e2e.stack_env(worker_concurrency, web_threads),
                "PROMETHEUS_MULTIPROC_DIR": os.path.join(metrics, side),
                **side_env(side, receiver),
            }
            os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"])
            stacks[side] = Stack(
                e2e.RULES.format(url=sink.url),
                workers=workers,
                web_workers=web_concurrency,
                env=env,
                worker_loglevel="INFO",
            )
        wait_workers(stacks.values(), workers)
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        lost = 0
        for round_ in range(rounds):
            for side in order(round_):
                stack = stacks[side]
                figures, _, missing = e2e.burst_phase(
                    stack.port,
                    lambda stack=stack: e2e.cpu_by_role(stack),
                    sink,
                    burst,
                    concurrency,
                    drain,
                    procs,
                )
                lost += len(missing)
                rates[side].append(figures["events_per_s"])
                progress(
                    f"  tracing: e2e round {round_ + 1}, traces {side:>3}: "
                    f"{figures['delivered']}/{figures['accepted']} delivered, "
                    f"{figures['events_per_s']:,.0f} events/s"
                )
        time.sleep(6)
    finally:
        for stack in stacks.values():
            stack.close()
            shutil.rmtree(stack.dir, ignore_errors=True)
        shutil.rmtree(metrics, ignore_errors=True)
        sink.close()
    out = {side: summary(rates[side]) for side in SIDES}
    out["rounds"] = rates
    out["lost"] = lost
    out["spans"] = receiver.take()
    out["cost"] = 1 - out["on"]["median"] / out["off"]["median"]
    return out


def wait_workers(stacks, workers: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for stack in stacks:
        logs = [stack.dir / f"worker{i}.log" for i in range(workers)]
        while not all(" ready." in log.read_text(errors="replace") for log in logs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Celery workers did not start; see {stack.dir}")
            time.sleep(0.2)


def off_path(number: int = 200_000) -> dict:
    """ns per call of what one accepted request calls with traces off: the request span,
    its end, the context stored with the event, the ids of its log line."""
    assert not tracing.enabled
    environ = {"PATH_INFO": ingest.PATH, "HTTP_TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16}
    calls = {
        "request": lambda: tracing.request(environ, ingest.PATH, "default"),
        "end_request": lambda: tracing.end_request(None, 200, ["x"], 0),
        "context": tracing.context,
        "log_ids": tracing.log_ids,
    }
    empty = min(timeit.repeat(lambda: None, number=number, repeat=5)) / number
    out = {}
    for name, call in calls.items():
        best = min(timeit.repeat(call, number=number, repeat=5)) / number
        out[name] = max(best - empty, 0.0) * 1e9
    out["per_request"] = sum(out.values())
    return out


def run(
    rounds: int = 3,
    seconds: float = 5.0,
    warmup: float = 1.0,
    burst: int = 2000,
    concurrency: int = 16,
    workers: int = 2,
    worker_concurrency: int = 16,
    web_concurrency: int = 2,
    web_threads: int = 4,
    drain: float = 120.0,
    procs: int = 1,
    progress=print,
) -> dict:
    started = time.monotonic()
    receiver = Receiver()
    try:
        out = {"off_path_ns": off_path()}
        progress(f"  tracing: off path {out['off_path_ns']['per_request']:.0f} ns per request")
        out["ingest"] = ingest_phase(
            receiver,
            rounds,
            seconds,
            warmup,
            concurrency,
            web_concurrency,
            web_threads,
            procs,
            progress,
        )
        out["e2e"] = e2e_phase(
            receiver,
            rounds,
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
    finally:
        receiver.close()
    out["elapsed_s"] = time.monotonic() - started
    out["loadavg"] = os.getloadavg()
    return out


def ranges(rounds: dict[str, list[float]]) -> str:
    """Each side's range over the rounds: ``on a–b, off c–d``."""
    return ", ".join(
        f"{side} {min(values):,.0f}–{max(values):,.0f}" for side, values in rounds.items() if values
    )


def judged(ok: bool, rounds: dict[str, list[float]], mark) -> str:
    """✓/✗ for medians of at least 3 rounds a side, else "—"."""
    return mark(ok) if min(len(v) for v in rounds.values()) >= 3 else "— (< 3 rounds)"


def rows(r: dict, targets: dict, mark) -> list[list[str]]:
    """The bench's rows of the summary table: figure, measured, target, ✓/✗."""
    ing, ee = r["ingest"], r["e2e"]
    off_ns = r["off_path_ns"]["per_request"]
    web_ns = ing["off"]["cpu_ms"]["median"] * 1e6
    return [
        [
            "traces on (100%, OTLP) ÷ off: ingest req/s lost, median of rounds",
            f"{ing['cost']:.1%} ({ing['on']['rps']['median']:,.0f} vs"
            f" {ing['off']['rps']['median']:,.0f}; {ranges(ing['rounds'])})",
            f"≤ {targets['tracing_cost']:.0%}",
            judged(ing["cost"] <= targets["tracing_cost"], ing["rounds"], mark),
        ],
        [
            "traces on (100%, OTLP) ÷ off: e2e events/s lost, median of rounds",
            f"{ee['cost']:.1%} ({ee['on']['median']:,.0f} vs {ee['off']['median']:,.0f};"
            f" {ranges(ee['rounds'])})",
            f"≤ {targets['tracing_cost']:.0%}",
            judged(ee["cost"] <= targets["tracing_cost"], ee["rounds"], mark),
        ],
        [
            "traces off: the tracing calls of one request ÷ its web CPU",
            f"{off_ns / web_ns:.3%} ({off_ns:.0f} ns of {web_ns / 1000:,.0f} µs)",
            f"≤ {targets['tracing_off_share']:.1%}",
            mark(off_ns / web_ns <= targets["tracing_off_share"]),
        ],
    ]


def details(r: dict) -> list[str]:
    """The bench's own lines for the report."""
    ing, ee, ns = r["ingest"], r["e2e"], r["off_path_ns"]

    def spread(values: list[float]) -> str:
        return ", ".join(f"{v:,.0f}" for v in values)

    lines = ["tracing (bench/tracing.py): traces off (no endpoint) vs on (always_on, OTLP/HTTP)"]
    for side in SIDES:
        lines.append(
            f"  ingest, traces {side:>3}: {ing[side]['rps']['median']:,.0f} req/s median"
            f" (rounds {spread(ing['rounds'][side])}), web"
            f" {ing[side]['cpu_ms']['median']:.2f} ms CPU/req"
        )
    for side in SIDES:
        lines.append(
            f"  e2e,    traces {side:>3}: {ee[side]['median']:,.0f} events/s median"
            f" (rounds {spread(ee['rounds'][side])})"
        )
    lines.append(
        f"  spans received: ingest {ing['spans']}, e2e {ee['spans']}; e2e lost {ee['lost']}"
    )
    calls = ", ".join(f"{k} {v:.0f}" for k, v in ns.items() if k != "per_request")
    lines.append(f"  off path, ns per call: {calls}; {ns['per_request']:.0f} ns per request")
    lines.append(
        f"  {r['elapsed_s']:.0f} s, load average {' '.join(f'{x:.1f}' for x in r['loadavg'])}"
    )
    return lines
