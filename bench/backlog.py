"""Destinations' backlog over 100,000 pending deliveries: what ``relay destinations
list``, ``GET /api/destinations`` and the console's overview read.

A private Redis is filled through relay's own code: events built from a seed receipt by
relay's parser, routed by ``Store.route_batch`` (the worker's routing call, pipelined) to
four destinations each, and left pending, as during an outage of the receivers. Then,
in-process, timed from the call to its answer:

- ``Pending.backlog``: the pending deliveries per destination, read from the counts kept
  with the outbox;
- ``list_destinations``: every destination's status (pause, circuit, leases, statistics,
  last error, backlog), the call behind the three views.

For scale, it also times what the backlog read did before the counts (reading and
decoding the whole outbox) and the one-time count of an outbox written before them.

    python -m bench backlog
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from relay.cli.embedded import EmbeddedRedis
from relay.events import Step, history_entry, new_job
from relay.ops.destinations import list_destinations
from relay.parsing import build_events
from relay.rules.loader import load_rules_text
from relay.state import Store, connect
from relay.state import backlog as counted
from relay.state import keys as state_keys
from relay.state.client import loads

SEED = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "webex-connect"
DESTINATIONS = ["crm", "trace", "helpdesk", "billing"]
RETRY_SPEC = {"attempts": 5, "initial": 2.0, "max": 60.0}
BATCH = 500
RULES = """version: 1
destinations:
  crm: {type: http, url: "http://127.0.0.1:9/crm", rate_limit: 10/s}
  trace: {type: log}
  helpdesk: {type: log}
  billing: {type: http, url: "http://127.0.0.1:9/billing", concurrency: 4}
routes:
  - {name: all, to: [crm, trace, helpdesk, billing]}
"""


def seed(store: Store, deliveries: int, progress) -> None:
    payload = json.loads((SEED / "receipt-delivered.json").read_text())
    (event,), _ = build_events(payload, "default", set())
    events = deliveries // len(DESTINATIONS)
    entries = [history_entry(Step.RECEIVED, rules_version="v1")]
    for start in range(0, events, BATCH):
        batch = []
        for number in range(start, min(start + BATCH, events)):
            item = {**event, "id": f"E{number:07d}"}
            jobs = [new_job(item, "all", name, "v1", RETRY_SPEC) for name in DESTINATIONS]
            batch.append((item, entries, jobs, [30.0] * len(jobs)))
        store.route_batch(batch)
        if (start // BATCH) % 10 == 0:
            progress(f"  backlog: {(start + BATCH) * len(DESTINATIONS):,} deliveries pending")


def _median_ms(call, reads: int) -> tuple[float, object]:
    times, answer = [], None
    for _ in range(reads):
        t0 = time.perf_counter()
        answer = call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), answer


def whole_outbox(store: Store) -> dict[str, int]:
    """The backlog as it was read before the counts: every pending task decoded."""
    counts: dict[str, int] = {}
    for _member, raw in store.client.hscan_iter(
        state_keys.PENDING_TASKS, match="deliver:*", count=1000
    ):
        name = loads(raw)["args"][0]["destination"]
        counts[name] = counts.get(name, 0) + 1
    return counts


def run(deliveries: int = 100_000, reads: int = 20, progress=print, keep: bool = False) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="relay-bench-backlog-"))
    server = EmbeddedRedis(directory / "redis", appendonly=False).start()
    try:
        store = Store(connect(server.url, timeout=30.0), 7 * 86400, 86400)
        destinations = load_rules_text(RULES).destinations
        t0 = time.perf_counter()
        seed(store, deliveries, progress)
        seed_s = time.perf_counter() - t0
        pending = sum(store.pending.backlog().values())
        assert pending == deliveries - deliveries % len(DESTINATIONS), pending
        progress(f"  backlog: {pending:,} pending in {seed_s:.0f} s; timing the reads …")
        backlog_ms, found = _median_ms(store.pending.backlog, reads)
        statuses_ms, _ = _median_ms(lambda: list_destinations(store, destinations), reads)
        before_ms, recounted = _median_ms(lambda: whole_outbox(store), 3)
        assert recounted == found, (recounted, found)
        # an outbox written before the counts: counted once, by the first read
        store.client.delete(
            state_keys.BACKLOG, state_keys.PENDING_DESTINATIONS, state_keys.BACKLOG_COUNTED
        )
        t0 = time.perf_counter()
        assert counted.counts(store.client) == found
        backfill_s = time.perf_counter() - t0
        return {
            "pending": pending,
            "destinations": len(destinations),
            "reads": reads,
            "seed_s": seed_s,
            "redis_mb": store.client.info("memory")["used_memory"] / 1e6,
            "backlog_ms": backlog_ms,
            "statuses_ms": statuses_ms,
            "whole_outbox_ms": before_ms,
            "backfill_s": backfill_s,
        }
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def rows(result: dict, targets: dict, mark) -> list[list[str]]:
    """The figure of ``python -m bench``'s table."""
    target = targets["backlog_ms"]
    return [
        [
            f"destinations' backlog, {result['pending']:,} pending deliveries (median)",
            f"{result['backlog_ms']:.2f} ms",
            f"≤ {target:g} ms",
            mark(result["backlog_ms"] <= target),
        ]
    ]


def details(result: dict) -> list[str]:
    """The lines below the table."""
    return [
        f"backlog: {result['pending']:,} deliveries pending to {result['destinations']} "
        f"destinations (routed in {result['seed_s']:.0f} s; Redis {result['redis_mb']:.0f} MB), "
        f"median of {result['reads']} reads in-process:",
        f"  the backlog per destination (Pending.backlog): {result['backlog_ms']:.2f} ms",
        f"  every destination's status (list_destinations): {result['statuses_ms']:.2f} ms",
        f"  the backlog read from the whole outbox, as before (median of 3): "
        f"{result['whole_outbox_ms']:.0f} ms",
        f"  after an upgrade, once: the outbox counted by destination: "
        f"{result['backfill_s']:.2f} s",
    ]
