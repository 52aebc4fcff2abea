"""Soak: steady traffic, a flaky destination and a worker killed midway; nothing may be lost.

    python -m bench.soak [--rate 200] [--seconds 60] [--fail-rate 0.05] [--workers 2]

Prints accepted, delivered, repeats, dead letters, lost (must be 0) and latency
percentiles; exits 1 if anything accepted was lost.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import redis

from bench.common import Sink, Stack, percentile, steady_post

RULES = """
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 5s
    retry: {{attempts: 20, initial: 200ms, max: 5s}}
routes:
  - {{name: all, to: [hook]}}
"""


def payload(i: int) -> dict:
    return {
        "deliveryInfoNotification": {
            "deliveryInfo": {
                "deliveryStatus": "Delivered",
                "code": "7500",
                "destination": f"4477009{i:05d}",
                "timeStamp": "2026-01-01T00:00:00Z",
            },
            "transid": f"soak-{time.time_ns()}-{i}",
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="POSTs per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fail-rate", type=float, default=0.05, help="transient 503s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--drain", type=float, default=180.0, help="max wait after posting")
    args = parser.parse_args(argv)

    sink = Sink(fail_rate=args.fail_rate)
    stack = Stack(
        RULES.format(url=sink.url), workers=args.workers, env={"RELAY_VISIBILITY_TIMEOUT": "30s"}
    )
    try:
        return run(args, sink, stack)
    finally:
        stack.close()
        sink.close()


def run(args, sink: Sink, stack: Stack) -> int:
    def kill_and_restart() -> None:
        stack.kill_worker(0)
        print(f"  t={args.seconds / 2:.0f}s: worker 0 killed (SIGKILL), restarting", flush=True)
        time.sleep(1)
        stack.workers[0] = stack.start_worker(0)

    threading.Timer(args.seconds / 2, kill_and_restart).start()
    print(f"posting {args.rate:g}/s for {args.seconds:g}s to {stack.url} …", flush=True)
    accepted, ingest, rejected = steady_post(stack.url, args.rate, args.seconds, payload)
    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    expected = {f"{event_id}:hook" for event_id in accepted}
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline:
        dead = {i for i in client.zrange("relay:dead", 0, -1)}
        if expected <= set(sink.first_ok) | dead and client.zcard("relay:pending") == 0:
            break
        time.sleep(0.5)
    dead = set(client.zrange("relay:dead", 0, -1))
    delivered = expected & set(sink.first_ok)
    lost = expected - delivered - dead
    repeats = sum(sink.ok_count[i] - 1 for i in delivered)
    e2e = [
        sink.first_ok[f"{event_id}:hook"] - sent
        for event_id, sent in accepted.items()
        if f"{event_id}:hook" in sink.first_ok
    ]
    report(
        args,
        len(accepted),
        rejected,
        len(delivered),
        repeats,
        len(dead),
        len(lost),
        sink.failed,
        ingest,
        e2e,
    )
    return 1 if lost else 0


def report(args, accepted, rejected, delivered, repeats, dead, lost, failed, ingest, e2e):
    ms = lambda values, p: f"{percentile(values, p) * 1000:.0f} ms"  # noqa: E731
    rows = [
        ("rate × duration", f"{args.rate:g}/s × {args.seconds:g}s, {args.workers} workers"),
        ("accepted (200)", accepted),
        ("rejected (non-200)", rejected),
        ("delivered", delivered),
        ("repeated deliveries (same webhook-id)", repeats),
        ("dead letters", dead),
        ("lost", lost),
        ("destination 503s answered", failed),
        ("ingest latency p50 / p99", f"{ms(ingest, 50)} / {ms(ingest, 99)}"),
        ("receipt→delivery p50 / p95 / p99", f"{ms(e2e, 50)} / {ms(e2e, 95)} / {ms(e2e, 99)}"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
