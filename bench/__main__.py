"""relay's benchmarks: ingest (against three baselines), end to end (against hand-written
relays: a careful one, at relay's in-flight deliveries and at its default, and a careless
one), matching, the rules' budgets, event search, dead-letter pages, destinations'
backlog, Redis memory per message in flight (the message lifecycle), memory, a framing
fuzz of the web process, Redis failovers under load, ordered delivery per key, traces on
against off, and a mutation fuzz of the webhook end to end.

    python -m bench [ingest|e2e|matching|budgets|search|deadletters|backlog|lifecycle|memory|
                     framing|failover|ordered|tracing|fuzz|all] …
    python -m bench e2e                          # end to end, against the baselines (minutes)
    python -m bench e2e --threads 16,32,64,128   # … and the careful relay's thread curve
    python -m bench e2e --intake-sweep 16,32,64,128  # … and relay's (intake threads)
    python -m bench failover                     # 10 Redis failovers under load (4-7 minutes)
    python -m bench ordered                      # ordered_by against unordered (≈ 2 minutes)
    python -m bench tracing                      # traces on against off (≈ 4-5 minutes)
    python -m bench fuzz [--bodies N]            # 10^6 mutated bodies end to end (not in all)
    make bench                                   # all, default settings (≈ 5 minutes)

Starts what it needs (a private Redis, relay's web under gunicorn with the Procfile's
settings, Celery workers, the ingest baseline apps, the hand-written relays of
bench.naive, a local HTTP sink) and stops it all.
Prints a plain-text table (each figure next to its target, ✓/✗) on stdout, progress on
stderr; ``--json`` prints the full results as JSON instead (``--json PATH`` writes them
there and still prints the table). Exit status 1 when an accepted event was lost, the
framing fuzz crashed or hung the web process, or a failover was answered other than 200 or
503 or made a worker take a live one over, or an ordered key's deliveries came out of order
or two at once, or the fuzz got a 5xx, found a routing error in the worker's log or an
accepted event neither delivered nor dead-lettered.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

from bench import (
    backlog,
    budgets,
    deadletters,
    e2e,
    failover,
    framing,
    fuzz,
    ingest,
    lifecycle,
    loadgen,
    matching,
    memory,
    ordered,
    search,
    tracing,
)

MB = 1024 * 1024 / 1e6  #: MiB → MB (the targets are in MB)

TARGETS = {
    "ingest_ratio": 0.70,
    "open_p99_ms": 20.0,
    "e2e_events_per_s": 500.0,
    "e2e_vs_naive": 1.3,  # against the careful hand-written relay
    "worker_cpu_ms_per_event": 1.6,
    "moonshot_events_per_s": 1000.0,
    "moonshot_cpu_ms_per_event": 2.0,
    "e2e_steady_p99_ms": 100.0,
    "matching_us_1000": 50.0,
    "matching_growth": 2.0,
    "alias_bomb_ms": 100.0,
    "search_p95_ms": 200.0,
    "deadletters_p95_ms": 200.0,
    "lifecycle_bytes": 200.0,
    "backlog_ms": 50.0,
    "web_mb": 80.0,
    "worker_mb": 150.0,
    "framing_failures": 0,
    "fuzz_failures": 0,  #: 5xx answers + routing errors + accepted events that did not end
    "failover_lost": 0,
    "failover_refusal_s": 10.0,
    "failover_unexpected_answers": 0,
    "failover_takeovers": 0,
    "ordered_ratio": 0.90,
    "ordered_next_p99_ms": 50.0,
    "ordered_blocked_p99_ratio": 1.10,
    "tracing_cost": 0.15,
    "tracing_off_share": 0.005,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=[
            "ingest",
            "e2e",
            "matching",
            "budgets",
            "search",
            "deadletters",
            "lifecycle",
            "backlog",
            "memory",
            "framing",
            "failover",
            "ordered",
            "tracing",
            "fuzz",
            "all",
        ],
    )
    parser.add_argument(
        "--bodies", type=int, default=fuzz.DEFAULT_BODIES, help="fuzz: mutated bodies posted"
    )
    parser.add_argument("--fuzz-seed", type=int, default=fuzz.DEFAULT_SEED)
    parser.add_argument("--failovers", type=int, default=10, help="failover: primaries killed")
    parser.add_argument(
        "--failover-interval", type=float, default=12.0, help="failover: seconds between kills"
    )
    parser.add_argument(
        "--failover-rate", type=float, default=200.0, help="failover: messages/s sent"
    )
    parser.add_argument(
        "--failover-drain",
        type=float,
        default=120.0,
        help="failover: seconds to wait for the last deliveries",
    )
    parser.add_argument(
        "--framing-cases",
        type=int,
        default=framing.DEFAULT_CASES,
        help="framing: generated cases (after the cut-short ones)",
    )
    parser.add_argument("--framing-seed", type=int, default=framing.DEFAULT_SEED)
    parser.add_argument(
        "--search-events",
        type=int,
        default=100_000,
        help="search: events in history (routed through the store's routing call)",
    )
    parser.add_argument(
        "--lifecycle-messages",
        type=int,
        default=1_000_000,
        help="lifecycle: open messages (waiting for a final receipt) kept in Redis",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="length of each timed phase: ingest saturation and open loop "
        "per target, e2e steady phase, memory's load; matching spends "
        "at most this per ruleset size",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="closed-loop connections (ingest saturation, e2e burst)",
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="ingest open-loop req/s")
    parser.add_argument(
        "--open-connections",
        type=int,
        default=64,
        help="connections the open-loop generator may use",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="ingest rounds (saturation and open loop); the targets rotate each round",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of load before each saturation measurement",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=10_000,
        help="e2e throughput: events per burst (each side, each round; ≥ 15 s a side)",
    )
    parser.add_argument(
        "--e2e-rounds",
        type=int,
        default=3,
        help="e2e: rounds of bursts (relay and each baseline), the order reversed each round",
    )
    parser.add_argument(
        "--threads",
        type=lambda text: tuple(int(x) for x in text.split(",") if x.strip()),
        default=(),
        metavar="N,N,…",
        help="e2e: also the careful relay's thread curve, one burst per worker thread count",
    )
    parser.add_argument(
        "--intake-sweep",
        type=lambda text: tuple(int(x) for x in text.split(",") if x.strip()),
        default=(),
        metavar="N,N,…",
        help="e2e: also relay's curve, one burst per RELAY_WORKER_INTAKE_THREADS value",
    )
    parser.add_argument(
        "--intake-threads",
        type=int,
        default=int(env.get("RELAY_WORKER_INTAKE_THREADS", e2e.INTAKE_THREADS)),
        help="e2e: RELAY_WORKER_INTAKE_THREADS of relay's workers, and the careful relay's "
        "worker threads",
    )
    parser.add_argument(
        "--tracing-burst", type=int, default=5000, help="tracing: events per e2e burst"
    )
    parser.add_argument("--e2e-rate", type=float, default=200.0, help="e2e latency: events/s")
    parser.add_argument(
        "--sink-delay", type=float, default=0.05, help="seconds the sink takes per request"
    )
    parser.add_argument(
        "--drain", type=float, default=180.0, help="e2e: seconds to wait for the last deliveries"
    )
    parser.add_argument(
        "--no-naive",
        action="store_true",
        help="e2e: skip the hand-written relays' bursts (bench.naive)",
    )
    parser.add_argument(
        "--naive-concurrency",
        type=lambda text: tuple(x.strip() for x in text.split(",") if x.strip()),
        default=("equal", "default"),
        metavar="equal,default",
        help="e2e: the careful hand-written relay at relay's in-flight deliveries (equal: "
        "--intake-threads worker threads per process), at its own default "
        "(--worker-concurrency), or both (the default)",
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=int(env.get("RELAY_WORKER_CONCURRENCY", 16)),
        help="RELAY_WORKER_CONCURRENCY (threads pool) of each worker",
    )
    parser.add_argument(
        "--web-concurrency",
        type=int,
        default=int(env.get("WEB_CONCURRENCY", 2)),
        help="WEB_CONCURRENCY: gunicorn processes of every server",
    )
    parser.add_argument(
        "--web-threads",
        type=int,
        default=int(env.get("WEB_THREADS", 4)),
        help="WEB_THREADS: threads per gunicorn process",
    )
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directories (logs, Redis data)"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="JSON results on stdout instead of the table, or to PATH",
    )
    return parser.parse_args(argv)


def e2e_baselines(concurrency: tuple[str, ...]) -> tuple[str, ...]:
    """The hand-written relays of the e2e bursts for ``--naive-concurrency``."""
    sides = {"equal": "careful", "default": "careful_default"}
    unknown = [x for x in concurrency if x not in sides]
    if unknown:
        raise SystemExit(f"--naive-concurrency: {', '.join(unknown)} is not equal or default")
    return (*(sides[x] for x in concurrency), "careless")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    every = [
        "matching",
        "budgets",
        "search",
        "deadletters",
        "lifecycle",
        "backlog",
        "ingest",
        "e2e",
        "memory",
        "framing",
        "failover",
        "ordered",
        "tracing",
    ]
    todo = every if args.what == "all" else [args.what]
    results: dict = {"machine": machine(), "settings": vars(args).copy(), "generator": {}}
    snapshots: list[dict] = []
    started = time.monotonic()
    progress(f"bench: {', '.join(todo)} (load average {results['machine']['loadavg_start']})")

    if "ingest" in todo or "e2e" in todo:
        ceiling = loadgen.ceiling(args.concurrency, seconds=2.0, procs=args.procs)
        results["generator"]["ceiling_rps"] = ceiling["ok"] / ceiling["window"]
        progress(
            f"  generator ceiling vs a null server: "
            f"{results['generator']['ceiling_rps']:,.0f} req/s"
        )
    if "matching" in todo:
        progress("  matching: generating rulesets and events …")
        results["matching"] = matching.run(seconds=min(args.seconds, 3.0))
        for size, row in results["matching"].items():
            progress(f"  matching: {int(size):>6} routes {row['us_per_event']:6.1f} µs/event")
    if "budgets" in todo:
        results["budgets"] = budgets.run()
        progress(
            f"  budgets: the alias bomb refused in {results['budgets']['alias_bomb_ms']:.2f} ms"
        )
    if "search" in todo:
        results["search"] = search.run(events=args.search_events, progress=progress, keep=args.keep)
        progress(f"  search: filtered pages p95 {results['search']['p95_ms']:.1f} ms")
    if "deadletters" in todo:
        results["deadletters"] = deadletters.run(progress=progress, keep=args.keep)
        progress(f"  deadletters: pages p95 {results['deadletters']['p95_ms']:.1f} ms")
    if "lifecycle" in todo:
        results["lifecycle"] = lifecycle.run(messages=args.lifecycle_messages, progress=progress)
        per = results["lifecycle"]["bytes_per_message"]
        progress(f"  lifecycle: {per:.0f} bytes per open message")
    if "backlog" in todo:
        results["backlog"] = backlog.run(progress=progress, keep=args.keep)
        progress(f"  backlog: read in {results['backlog']['backlog_ms']:.2f} ms")
    if "ingest" in todo:
        results["ingest"] = ingest.run(
            seconds=args.seconds,
            concurrency=args.concurrency,
            rounds=args.rounds,
            warmup=args.warmup,
            rate=args.rate,
            open_connections=args.open_connections,
            web_concurrency=args.web_concurrency,
            web_threads=args.web_threads,
            procs=args.procs,
            keep=args.keep,
            progress=progress,
            on_servers=lambda servers: snapshots.append(
                memory.snapshot(servers.stack, "ingest stack (no workers)")
            ),
        )
    if "e2e" in todo:
        results["e2e"] = e2e.run(
            burst=args.burst,
            rounds=args.e2e_rounds,
            rate=args.e2e_rate,
            seconds=max(args.seconds, 5.0),
            concurrency=args.concurrency,
            workers=args.workers,
            worker_concurrency=args.worker_concurrency,
            intake_threads=args.intake_threads,
            web_concurrency=args.web_concurrency,
            web_threads=args.web_threads,
            sink_delay=args.sink_delay,
            drain=args.drain,
            procs=args.procs,
            keep=args.keep,
            progress=progress,
            on_stack=lambda stack: snapshots.append(memory.snapshot(stack, "e2e stack")),
            baselines=() if args.no_naive else e2e_baselines(args.naive_concurrency),
            threads=args.threads,
            intake_sweep=args.intake_sweep,
        )
    if "memory" in todo:
        if snapshots:  # after the load of ingest and e2e above
            results["memory"] = memory.merge(*snapshots)
        else:
            results["memory"] = memory.run(
                seconds=args.seconds,
                concurrency=args.concurrency,
                workers=args.workers,
                worker_concurrency=args.worker_concurrency,
                web_concurrency=args.web_concurrency,
                web_threads=args.web_threads,
                sink_delay=args.sink_delay,
                drain=args.drain,
                procs=args.procs,
                keep=args.keep,
                progress=progress,
            )
    if "framing" in todo:
        results["framing"] = framing.run(
            cases=args.framing_cases,
            seed=args.framing_seed,
            web_concurrency=args.web_concurrency,
            web_threads=args.web_threads,
            keep=args.keep,
            progress=progress,
        )
    if "fuzz" in todo:
        results["fuzz"] = fuzz.run(
            count=args.bodies,
            seed=args.fuzz_seed,
            web_concurrency=args.web_concurrency,
            web_threads=args.web_threads,
            keep=args.keep,
            progress=progress,
        )
    if "failover" in todo:
        results["failover"] = failover.run(
            failovers=args.failovers,
            interval=args.failover_interval,
            rate=args.failover_rate,
            workers=args.workers,
            worker_concurrency=args.worker_concurrency,
            web_concurrency=args.web_concurrency,
            web_threads=args.web_threads,
            drain=args.failover_drain,
            seconds=args.seconds,
            concurrency=args.concurrency,
            rounds=args.rounds,
            warmup=args.warmup,
            procs=args.procs,
            keep=args.keep,
            progress=progress,
        )
    if "ordered" in todo:
        results["ordered"] = ordered.run(progress=progress, keep=args.keep)
    if "tracing" in todo:
        results["tracing"] = tracing.run(
            rounds=args.rounds,
            seconds=args.seconds,
            warmup=args.warmup,
            burst=args.tracing_burst,
            concurrency=args.concurrency,
            workers=args.workers,
            worker_concurrency=args.worker_concurrency,
            web_concurrency=args.web_concurrency,
            web_threads=args.web_threads,
            drain=args.drain,
            procs=args.procs,
            progress=progress,
        )
    results["machine"]["loadavg_end"] = loadavg()
    results["elapsed_s"] = time.monotonic() - started
    results["targets"] = TARGETS

    text = render(results)
    if args.json == "-":
        json.dump(results, sys.stdout, indent=2, default=str)
        print()
    else:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, default=str)
        print(text)
    lost = results.get("e2e", {}).get("loss", {}).get("lost", 0)
    framed = results.get("framing", {})
    fo = results.get("failover", {})
    failed_over = fo.get("lost") or fo.get("unexpected_answers") or fo.get("takeovers")
    disorder = results.get("ordered", {}).get("late") or results.get("ordered", {}).get("overlap")
    hostile = results.get("fuzz", {})
    unended = hostile.get("server_errors") or hostile.get("routing_errors") or hostile.get("lost")
    crashed = framed.get("crashes") or framed.get("hangs")
    failed = lost or crashed or failed_over or disorder or unended
    return 1 if failed else 0


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": loadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


# -- the table ----------------------------------------------------------------------------


def num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def bound(result: dict) -> str:
    """A "≥ " when requests were abandoned (their latencies are lower bounds)."""
    return "≥ " if result.get("abandoned") else ""


def mark(ok: bool | None) -> str:
    return "—" if ok is None else ("✓" if ok else "✗")


#: a comparison is judged only on the median of at least this many rounds
MIN_ROUNDS = 3


def judged(ok: bool, rounds: int) -> str:
    """✓/✗ for a median of ``rounds`` rounds; "—" (not judged) for fewer than MIN_ROUNDS."""
    return mark(ok) if rounds >= MIN_ROUNDS else "— (< 3 rounds)"


def spread_text(values: list[float], fmt: str = "{:.0%}") -> str:
    """Each round's value, then their range: ``a, b, c; min–max``."""
    each = ", ".join(fmt.format(x) for x in values)
    return f"{each}; {fmt.format(min(values))}–{fmt.format(max(values))}" if values else "—"


def ingest_rows(ing: dict, s: dict, t: dict) -> list[list[str]]:
    """The summary's ingest lines: relay ÷ the plain-WSGI LPUSH floor (the target) and ÷
    the Flask one (a second line), and the open loop's p99, each a median of rounds."""
    sat = ing["saturation"]
    rounds = ing["round_ratios"]
    ratio = statistics.median(rounds)
    rows = [
        [
            f"ingest req/s relay ÷ LPUSH, plain WSGI (closed loop, {s['concurrency']} conns), "
            f"median of {len(rounds)} rounds",
            f"{ratio:.0%} ({spread_text(rounds)}; overall "
            f"{num(sat['relay']['rps'])} ÷ {num(sat['lpush']['rps'])})",
            f"≥ {t['ingest_ratio']:.0%}",
            judged(ratio >= t["ingest_ratio"], len(rounds)),
        ]
    ]
    flask = ing.get("round_ratios_flask")
    if flask:
        rows.append(
            [
                "  second floor: relay ÷ LPUSH in Flask, median of rounds",
                f"{statistics.median(flask):.0%} ({spread_text(flask)}; overall "
                f"{num(sat['relay']['rps'])} ÷ {num(sat['lpush_flask']['rps'])})",
                "—",
                "—",
            ]
        )
    relay = ing["open"]["relay"]
    p99s = relay.get("p99_rounds") or [relay["p99_ms"]]
    p99 = statistics.median(p99s)
    rows.append(
        [
            f"ingest p99 at {num(s['rate'])} req/s (open loop), median of {len(p99s)} rounds",
            f"{bound(relay)}{ms(p99)} ms ({spread_text(p99s, '{:.1f}')})",
            f"≤ {t['open_p99_ms']:g} ms",
            judged(p99 <= t["open_p99_ms"], len(p99s)),
        ]
    )
    return rows


def table(rows: list[list[str]], header: list[str] | None = None) -> list[str]:
    """Rows of cells as aligned plain text; the first column left, the others left too."""
    every = ([header] if header else []) + rows
    widths = [max(len(row[i]) for row in every) for i in range(len(every[0]))]
    lines = []
    for index, row in enumerate(every):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if header and index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def render(r: dict) -> str:
    s, t = r["settings"], TARGETS
    out = [
        f"relay benchmark — {r['machine']['date']}, {r['machine']['cores']} cores, "
        f"Python {r['machine']['python']}, load average {r['machine']['loadavg_start']} "
        f"at start, {r['machine']['loadavg_end']} at end ({r['elapsed_s']:.0f} s)"
    ]
    if "ingest" in r or "e2e" in r:
        out.append(
            "web: gunicorn, relay's settings (relay.web.gunicorn_conf; the ingest baselines"
            " bench.gunicorn_conf, the same without relay's per-process hooks),"
            f" WEB_CONCURRENCY={s['web_concurrency']} × WEB_THREADS={s['web_threads']},"
            " a listening socket per process (but the careless hand-written relay)"
        )
        ceiling = r["generator"].get("ceiling_rps")
        out.append(
            f"generator: bench.loadgen (asyncio raw-socket HTTP/1.1 keep-alive, pre-built "
            f"unique requests), {s['procs']} process(es); ceiling ≥ {num(ceiling)} req/s "
            "against a null server"
        )

    # figures against targets
    rows: list[list[str]] = []
    ing = r.get("ingest")
    if ing:
        rows += ingest_rows(ing, s, t)
    ee = r.get("e2e")
    if ee:
        rows += e2e_rows(ee, s, t)
    mt = r.get("matching")
    if mt and "1000" in mt:
        us = mt["1000"]["us_per_event"]
        rows.append(
            [
                "matching µs/event, 1,000 routes",
                f"{us:.1f}",
                f"≤ {t['matching_us_1000']:g}",
                mark(us <= t["matching_us_1000"]),
            ]
        )
        if "10000" in mt:
            growth = mt["10000"]["us_per_event"] / us
            rows.append(
                [
                    "matching cost 10,000 ÷ 1,000 routes",
                    f"{growth:.2f}×",
                    f"≤ {t['matching_growth']:g}×",
                    mark(growth <= t["matching_growth"]),
                ]
            )
    bg = r.get("budgets")
    if bg:
        rows.append(
            [
                f"rules: a {bg['alias_bomb_bytes']}-byte alias bomb refused",
                f"{bg['alias_bomb_ms']:.2f} ms",
                f"≤ {t['alias_bomb_ms']:g} ms",
                mark(bg["alias_bomb_ms"] <= t["alias_bomb_ms"]),
            ]
        )
    sr = r.get("search")
    if sr:
        rows.append(
            [
                f"search: page of {sr['limit']} p95, {num(sr['events'])} events in history",
                f"{ms(sr['p95_ms'])} ms",
                f"≤ {t['search_p95_ms']:g} ms",
                mark(sr["p95_ms"] <= t["search_p95_ms"]),
            ]
        )
    dl = r.get("deadletters")
    if dl:
        rows.append(
            [
                f"dead letters: API and console page p95, {num(dl['stored'])} dead letters",
                f"{ms(dl['p95_ms'])} ms",
                f"≤ {t['deadletters_p95_ms']:g} ms",
                mark(dl["p95_ms"] <= t["deadletters_p95_ms"]),
            ]
        )
    lc = r.get("lifecycle")
    if lc:
        rows.append(
            [
                f"Redis memory per open message (record + deadline), {num(lc['messages'])} open",
                f"{lc['bytes_per_message']:.0f} bytes ({lc['used_mb']:.0f} MB)",
                f"≤ {t['lifecycle_bytes']:g} bytes",
                mark(lc["bytes_per_message"] <= t["lifecycle_bytes"]),
            ]
        )
    bl = r.get("backlog")
    if bl:
        rows += backlog.rows(bl, t, mark)
    mem = r.get("memory")
    if mem:
        if mem.get("web_peak_mib"):
            web = mem["web_peak_mib"] * MB
            rows.append(
                [
                    "peak RSS of a web process (gunicorn worker)",
                    f"{web:.1f} MB",
                    f"≤ {t['web_mb']:g} MB",
                    mark(web <= t["web_mb"]),
                ]
            )
        if mem.get("worker_peak_mib"):
            worker = mem["worker_peak_mib"] * MB
            rows.append(
                [
                    "peak RSS of a worker process (Celery)",
                    f"{worker:.1f} MB",
                    f"≤ {t['worker_mb']:g} MB",
                    mark(worker <= t["worker_mb"]),
                ]
            )
    fz = r.get("framing")
    if fz:
        failures = fz["crashes"] + fz["hangs"]
        rows.append(
            [
                f"framing fuzz: crashes / hangs of the web in {num(fz['cases'])} cases",
                f"{fz['crashes']} / {fz['hangs']}",
                f"{t['framing_failures']}",
                mark(failures <= t["framing_failures"]),
            ]
        )
    hz = r.get("fuzz")
    if hz:
        failures = hz["server_errors"] + hz["routing_errors"] + hz["lost"]
        rows.append(
            [
                f"webhook fuzz of {num(hz['bodies'])} bodies: 5xx + routing errors + not ended",
                f"{hz['server_errors']} + {hz['routing_errors']} + {hz['lost']}",
                f"{t['fuzz_failures']}",
                mark(failures <= t["fuzz_failures"]),
            ]
        )
    fo = r.get("failover")
    if fo:
        rows += failover_rows(fo)
    od = r.get("ordered")
    if od:
        rows += ordered.rows(od, t, mark)
    tr = r.get("tracing")
    if tr:
        rows += tracing.rows(tr, t, mark)
    if rows:
        out += [""] + table(rows, ["figure", "measured", "target", ""])

    if ing:
        out += ["", *ingest_details(ing, s)]
    if ee:
        out += ["", *bursts_details(ee, s), "", *e2e_details(ee, s)]
    if mt:
        out += ["", *matching_details(mt)]
    if bg:
        out += ["", *budgets.details(bg)]
    if sr:
        out += ["", *search_details(sr)]
    if dl:
        out += ["", *deadletters.details(dl)]
    if bl:
        out += ["", *backlog.details(bl)]
    if mem:
        out += ["", *memory_details(mem)]
    if fz:
        out += ["", *framing.details(fz, s)]
    if hz:
        out += ["", *fuzz.details(hz)]
    if fo:
        out += ["", *failover.details(fo)]
    if od:
        out += ["", *ordered.details(od)]
    if tr:
        out += ["", *tracing.details(tr)]
    return "\n".join(out)


def failover_rows(fo: dict) -> list[list[str]]:
    t, n = TARGETS, len(fo["rows"])
    window = fo["refusal_window_s"]
    unexpected = fo["unexpected_answers"]
    return [
        [
            f"failover: answered 200, never delivered ({n} primary kills)",
            f"{num(fo['lost'])} of {num(fo['accepted'])}",
            f"{t['failover_lost']}",
            mark(fo["lost"] <= t["failover_lost"]),
        ],
        [
            "failover: 503 window after a kill, p50 / max",
            f"{window['p50']:.1f} / {window['max']:.1f} s",
            f"max ≤ {t['failover_refusal_s']:g} s",
            mark(window["max"] <= t["failover_refusal_s"]),
        ],
        [
            "failover: answers other than 200 and 503",
            f"{num(unexpected)} of {num(sum(fo['answers'].values()))}",
            f"{t['failover_unexpected_answers']}",
            mark(unexpected <= t["failover_unexpected_answers"]),
        ],
        [
            "failover: live workers taken over",
            f"{fo['takeovers']}",
            f"{t['failover_takeovers']}",
            mark(fo["takeovers"] <= t["failover_takeovers"]),
        ],
    ]


def ingest_details(ing: dict, s: dict) -> list[str]:
    sat, opn = ing["saturation"], ing["open"]
    names = ingest.TARGETS

    def row(label, fn):
        return [label] + [fn(sat[n] if not label.startswith("open") else opn[n]) for n in names]

    rows = [
        row("requests/s", lambda x: num(x["rps"])),
        row(
            "÷ LPUSH (plain WSGI)",
            lambda x: f"{x['rps'] / sat['lpush']['rps']:.0%}" if sat["lpush"]["rps"] else "—",
        ),
        row("latency p50 / p99 ms", lambda x: f"{ms(x['p50_ms'])} / {ms(x['p99_ms'])}"),
        row("not 200 / errors", lambda x: f"{x['not_200']} / {x['errors']}"),
        row(
            "CPU ms/request: gunicorn / redis",
            lambda x: f"{x['server_cpu_ms_per_req']:.2f} / {x['redis_cpu_ms_per_req']:.2f}",
        ),
        row("generator CPU (share of a core)", lambda x: f"{x['generator_cpu_share']:.0%}"),
        row(f"open {num(s['rate'])}/s: achieved req/s", lambda x: num(x["achieved_rate"])),
        row(
            "open: latency p50 / p99 ms, all rounds",
            lambda x: f"{bound(x)}{ms(x['p50_ms'])} / {bound(x)}{ms(x['p99_ms'])}",
        ),
        row(
            "open: not 200 / errors / abandoned",
            lambda x: f"{x['not_200']} / {x['errors']} / {x['abandoned']}",
        ),
    ]
    title = (
        f"ingest: {s['seconds']:g} s per target ({s['rounds']} rounds, the order rotated "
        f"each round, {s['warmup']:g} s warm-up each), {s['concurrency']} connections; "
        f"open loop {s['seconds']:g} s per target in as many rotated rounds at "
        f"{num(s['rate'])} req/s on ≤ {s['open_connections']} "
        "connections, latency from when each request was due (a request still waiting "
        f"{loadgen.GRACE:g} s after the last was due is abandoned and counts the time "
        "it waited); relay's web with no worker running; the baselines under "
        "bench.gunicorn_conf (relay's gunicorn settings, a socket per process, without "
        "relay's per-process rules watcher and traces)"
    )
    return [title, *table(rows, ["", "relay", "LPUSH (WSGI)", "LPUSH (Flask)", "delay()"])]


def e2e_rows(ee: dict, s: dict, t: dict) -> list[list[str]]:
    """The summary's e2e lines: relay's events/s, against the careful relay (the target)
    and the careless one (a labelled second line), worker CPU, latency, loss, moonshot."""
    th = ee["throughput"]
    eps, sp = th["events_per_s"], th["events_per_s_spread"]
    rounds = th["rounds"]
    rows = [
        [
            f"e2e events/s to a {s['sink_delay'] * 1000:g} ms sink (median of {rounds} "
            f"bursts of {num(s['burst'])})",
            f"{num(eps)} ({num(sp['min'])}–{num(sp['max'])})",
            f"≥ {num(t['e2e_events_per_s'])}",
            judged(eps >= t["e2e_events_per_s"], rounds),
        ]
    ]
    labels = {
        "careful": (
            "e2e events/s relay ÷ careful hand-written relay, equal in-flight deliveries "
            "(median of rounds)",
            True,
        ),
        "careful_default": (
            "  the same, each at its default in-flight deliveries (relay's intake, the "
            "careful relay's Celery concurrency)",
            False,
        ),
        "careless": ("  second baseline: relay ÷ careless hand-written relay", False),
    }
    for side, ratio in ee.get("vs", {}).items():
        label, targeted = labels[side]
        base = ee["baselines"][side]["events_per_s"]
        rows.append(
            [
                label,
                f"{ratio['median']:.2f}× ({ratio['min']:.2f}–{ratio['max']:.2f}; "
                f"{num(eps)} ÷ {num(base)}; in flight "
                f"{ee['config']['sides']['relay']['in_flight'].split()[0]} vs "
                f"{ee['config']['sides'][side]['in_flight'].split()[0]})",
                f"≥ {t['e2e_vs_naive']:g}×" if targeted else "—",
                judged(ratio["median"] >= t["e2e_vs_naive"], rounds) if targeted else "—",
            ]
        )
    cpu, worker = th["cpu_ms_per_event"], th["worker_cpu_spread"]
    careful = ee.get("baselines", {}).get("careful")
    rows.append(
        [
            f"e2e worker CPU per delivered event (bursts, median of {rounds})",
            f"{cpu['worker']:.2f} ms ({worker['min']:.2f}–{worker['max']:.2f})"
            + (f" (careful: {careful['cpu_ms_per_event']['worker']:.2f})" if careful else ""),
            f"≤ {t['worker_cpu_ms_per_event']:g} ms",
            judged(cpu["worker"] <= t["worker_cpu_ms_per_event"], rounds),
        ]
    )
    windows = ee["latency"].get("p99_windows_ms") or [ee["latency"]["p99_ms"]]
    steady = statistics.median(windows)
    rows.append(
        [
            f"e2e steady {num(s['e2e_rate'])} events/s: POST → delivered p99 (median of "
            f"{len(windows)} windows of the steady phase)",
            f"{ms(steady)} ms ({spread_text(windows, '{:.0f}')})",
            f"≤ {t['e2e_steady_p99_ms']:g} ms",
            judged(steady <= t["e2e_steady_p99_ms"], len(windows)),
        ]
    )
    loss = ee["loss"]
    rows.append(
        [
            "e2e accepted but never delivered",
            f"{num(loss['lost'])} of {num(loss['accepted'])}",
            "0",
            mark(loss["lost"] == 0),
        ]
    )
    total = sum(cpu.get(role, 0.0) for role in ROLES)
    rows.append(
        [
            "e2e moonshot: events/s; CPU per event, all roles on the machine (medians)",
            f"{num(eps)}; {total:.2f} ms",
            f"{num(t['moonshot_events_per_s'])}; ≈ {t['moonshot_cpu_ms_per_event']:g} ms",
            judged(
                eps >= t["moonshot_events_per_s"] and total <= t["moonshot_cpu_ms_per_event"],
                rounds,
            ),
        ]
    )
    return rows


#: the roles whose CPU per event the e2e bench measures
ROLES = ("web", "worker", "redis", "sink", "generator")


def e2e_details(ee: dict, s: dict) -> list[str]:
    lat, loss = ee["latency"], ee["loss"]
    rows = [
        [
            f"steady {num(s['e2e_rate'])}/s: POST → delivered p50 / p99",
            f"{ms(lat['p50_ms'])} / {ms(lat['p99_ms'])} ms",
        ],
        ["steady: ingest p99", f"{ms(lat['ingest_p99_ms'])} ms"],
        [
            "lost / repeated deliveries / dead letters",
            f"{loss['lost']} / {loss['repeats']} / {loss['dead_letters']}",
        ],
    ]
    title = (
        f"e2e steady phase: {s['workers']} Celery worker process(es) × "
        f"{s['worker_concurrency']} threads + {ee['config']['intake_threads']} intake threads "
        f"(celery -A relay.worker worker), sink {s['sink_delay'] * 1000:g} ms per request; "
        "latency includes the sink's delay; loss over every event relay accepted"
    )
    return [title, *table(rows)]


def bursts_details(ee: dict, s: dict) -> list[str]:
    """relay and the hand-written relays side by side: medians of the rounds."""
    sides = {"relay": ee["throughput"], **ee.get("baselines", {})}

    def row(label, fn):
        return [label] + [fn(side) for side in sides.values()]

    def cpu(side: dict, role: str) -> float:
        return side["cpu_ms_per_event"].get(role, float("nan"))

    def each(side: dict) -> str:
        return ", ".join(num(x) for x in side["each_events_per_s"])

    rows = [
        row(
            "accepted / delivered (all rounds)",
            lambda x: f"{num(x['accepted'])} / {num(x['delivered'])}",
        ),
        row(
            "POSTs took (ingest req/s)",
            lambda x: f"{x['ingest_s']:.1f} s ({num(x['ingest_rps'])}/s)",
        ),
        row("first POST → last delivery", lambda x: f"{x['span_s']:.1f} s"),
        row("events/s, median", lambda x: num(x["events_per_s"])),
        row("events/s, each round", each),
        row(
            "relay ÷ this (median of rounds)",
            lambda x: (
                f"{ee['vs'][name]['median']:.2f}×"
                if (name := _side_name(sides, x)) in ee.get("vs", {})
                else "—"
            ),
        ),
        *[row(f"CPU ms/event: {role}", lambda x, r=role: f"{cpu(x, r):.2f}") for role in ROLES],
        row(
            "CPU ms/event: web + worker + redis",
            lambda x: f"{sum(cpu(x, r) for r in ('web', 'worker', 'redis')):.2f}",
        ),
        row("lost (after the drain)", lambda x: num(x["lost"])),
    ]
    config = ee["config"]["sides"]
    how = "; ".join(
        f"{name}: {c['workers']} × {c['worker']}, web {c['web']}; in flight: {c['in_flight']}"
        for name, c in config.items()
    )
    title = (
        f"e2e bursts: {ee['config']['rounds']} rounds of a burst of {num(s['burst'])} on "
        f"{s['concurrency']} connections through each side, the order reversed each round, "
        f"each side started afresh on the same Redis and sink, medians of the rounds. "
        f"careful = bench.naive with a requests.Session per thread, acks late, reject on "
        f"worker lost, relay's listening (a socket per web process), as many worker threads "
        f"as relay's intake (equal in-flight deliveries); careful_default = the same at "
        f"the Celery concurrency relay's workers get (a hand-written relay's default); "
        f"careless = requests.post per delivery, acks early (Celery's defaults), one shared "
        f"listening socket. {how}"
    )
    out = [title, *table(rows, ["", *sides])]
    titles = {
        "thread_curve": "the careful relay's thread curve (worker threads per process)",
        "intake_curve": "relay's thread curve (RELAY_WORKER_INTAKE_THREADS per process)",
    }
    for key, label in titles.items():
        curve = ee.get(key)
        if not curve:
            continue
        out += [
            "",
            f"e2e: {label}, one burst each",
            *table(
                [
                    [
                        str(point["threads"]),
                        num(point["events_per_s"]),
                        f"{point['worker_cpu_ms']:.2f}",
                        num(point["lost"]),
                    ]
                    for point in curve
                ],
                ["threads", "events/s", "worker CPU ms/event", "lost"],
            ),
        ]
    return out


def _side_name(sides: dict, side: dict) -> str:
    return next(name for name, value in sides.items() if value is side)


def matching_details(mt: dict) -> list[str]:
    sizes = list(mt)
    rows = [
        ["µs/event (best of repeats)"] + [f"{mt[k]['us_per_event']:.1f}" for k in sizes],
        ["µs/event without the index"] + [num(mt[k].get("scan_us_per_event"), 1) for k in sizes],
        ["routes tested per event"] + [num(mt[k].get("candidates_per_event"), 1) for k in sizes],
        ["events a route matched"] + [f"{mt[k]['matched_share']:.0%}" for k in sizes],
        ["load time s"] + [f"{mt[k]['load_s']:.2f}" for k in sizes],
    ]
    title = (
        f"matching: Ruleset.match in-process over {mt[sizes[0]]['events']:,} events "
        "from the seed payloads; generated routes: equality on source / keyword / code / "
        "status / callback.campaign, a fifth with a prefix, regex, contains or not, 5 % "
        "continue: true, and 1 % (at most 10) with no equality condition at all"
    )
    return [title, *table(rows, [""] + [f"{int(k):,} routes" for k in sizes])]


def search_details(sr: dict) -> list[str]:
    rows = [
        [label, f"{ms(q['p50_ms'])} / {ms(q['p95_ms'])}", str(q["items"])]
        for label, q in sr["queries"].items()
    ]
    inter = sr["intersections"]
    rows.append(["all of them", f"{ms(sr['p50_ms'])} / {ms(sr['p95_ms'])}", ""])
    rows.append(
        [
            "intersections: relay's walk vs ZINTERSTORE (p95)",
            f"{ms(inter['walk_p95_ms'])} vs {ms(inter['zinterstore_p95_ms'])}",
            "",
        ]
    )
    title = (
        f"search: relay.ops.search.search_events in-process, {num(sr['events'])} events "
        f"(seeded in {sr['seed_s']:.0f} s through Store.route_batch; Redis "
        f"{sr['redis_mb']:.0f} MB, {sr['index_sets']} index sets), {sr['rounds']} rounds of "
        "each query: the first page, and the 10th page following cursors"
    )
    return [title, *table(rows, ["query", "p50 / p95 ms", "items"])]


def memory_details(mem: dict) -> list[str]:
    lines = ["memory: VmHWM (peak RSS) after the load, MB"]
    for snap in mem.get("snapshots", []):
        web = ", ".join(f"{v * MB:.1f}" for v in snap.get("web_workers", {}).values())
        master = snap["web_master"] * MB
        line = f"  {snap.get('label')}: gunicorn workers {web} (master {master:.1f})"
        if snap.get("celery"):
            line += "; Celery worker processes " + ", ".join(
                f"{v * MB:.1f}" for v in snap["celery"].values()
            )
        lines.append(line)
    return lines


if __name__ == "__main__":
    sys.exit(main())
