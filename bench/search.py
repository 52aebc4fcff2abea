"""Event search latency: filtered pages over 100,000 events in history.

A private Redis is loaded through relay's own code: the events are built from the seed
payloads by relay's parser (receipts and inbound messages across sources, statuses,
codes and keywords, accepted over the last 24 h), routed by ``Store.route_batch`` (the
worker's routing call, pipelined) and their deliveries settled by the same settlement
script the delivery transactions run (most delivered, some dead, some retrying, some
still pending; inbound messages with no route stay unrouted). Then
``relay.ops.search.search_events`` answers a mix of filtered first pages and deep pages
(following ``next_cursor``), in-process, timed from the call to the page of summaries.

For the intersections, the same queries are also answered the other way —
``ZINTERSTORE`` of the facet sets into a temporary key, then ``ZRANGE … REV LIMIT`` —
to compare with relay's walk of the smallest set.

    python -m bench search [--events N]
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import percentile
from relay.cli.embedded import EmbeddedRedis
from relay.events import Step, history_entry, new_job
from relay.ops.search import EventQuery, search_events
from relay.parsing import build_events
from relay.state import Store, connect
from relay.state import keys as state_keys
from relay.state.index import DEAD, DONE, RETRY

SEEDS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "webex-connect"
RETRY_SPEC = {"attempts": 5, "initial": 2.0, "max": 60.0}
SOURCES = ["default", "eu", "us", "shop", "billing"]
STATUSES = ["Delivered"] * 6 + ["Failed", "Un-Delivered", "Submitted", "Clicked"]
CODES = ["0", "7102", "7500", "7103", "1001"]
WORDS = ["STOP", "HELP", "INFO", "JOIN", "YES", "NO", "BALANCE", "ORDER", "hi", "thanks"]
BATCH = 1000

#: the queries timed: (label, query) — first pages; deep pages follow cursors of some
QUERIES = [
    ("no filter", {}),
    ("state=dead", {"state": "dead"}),
    ("destination=crm", {"destination": "crm"}),
    ("kind=inbound_message keyword=STOP", {"kind": "inbound_message", "keyword": "STOP"}),
    ("state=unrouted kind=inbound_message", {"state": "unrouted", "kind": "inbound_message"}),
    ("destination=crm state=dead", {"destination": "crm", "state": "dead"}),
    ("status=failed source=eu code=7102", {"status": "failed", "source": "eu", "code": "7102"}),
    ("route=failures state=pending", {"route": "failures", "state": "pending"}),
    ("source=shop since=1h", {"source": "shop", "since": "1h"}),
    ("keyword=BALANCE state=delivered", {"keyword": "BALANCE", "state": "delivered"}),
    # sparse: fewer matches than a page, so the whole smallest set is walked
    (
        "keyword=ORDER state=dead source=billing",
        {"keyword": "ORDER", "state": "dead", "source": "billing"},
    ),
]


def _seed_payloads() -> tuple[dict, dict]:
    receipt = json.loads((SEEDS / "receipt-failed-invalid-address.json").read_text())
    inbound = json.loads((SEEDS / "inbound-sms.json").read_text())
    return receipt, inbound


def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(rnd: random.Random, at: float, receipt: dict, inbound: dict) -> dict:
    if rnd.random() < 0.7:
        payload = json.loads(json.dumps(receipt))
        info = payload["deliveryInfoNotification"]["deliveryInfo"]
        info["deliveryStatus"] = rnd.choice(STATUSES)
        info["code"] = rnd.choice(CODES)
        info["destination"] = f"4477009{rnd.randrange(10**5):05d}"
        payload["deliveryInfoNotification"]["transid"] = f"t{rnd.getrandbits(64):x}"
    else:
        payload = dict(inbound)
        payload["message"] = f"{rnd.choice(WORDS)} {rnd.getrandbits(16)}"
        payload["oa"] = f"4477009{rnd.randrange(10**5):05d}"
        payload["tid"] = f"m{rnd.getrandbits(64):x}"
    (event,), _ = build_events(payload, rnd.choice(SOURCES), set())
    event["received_at"] = _iso(at)
    return event


def _routing(event: dict) -> tuple[list[str], list[str]]:
    """What a typical rules file does: failures to crm and trace, inbound keywords to a
    helpdesk, everything else to trace; chat words match no route."""
    if event["kind"] == "delivery_receipt":
        if event["status"] in ("Failed", "Un-Delivered"):
            return ["failures"], ["crm", "trace"]
        return ["default"], ["trace"]
    if event["keyword"] in ("HI", "THANKS"):
        return [], []
    return ["inbound"], ["helpdesk"]


def seed(store: Store, count: int, rnd: random.Random, now: float, progress) -> None:
    receipt, inbound = _seed_payloads()
    span = 86400.0
    settles: list[tuple[str, dict[str, str]]] = []
    for start in range(0, count, BATCH):
        batch = []
        for i in range(start, min(start + BATCH, count)):
            event = _event(rnd, now - span + span * i / count, receipt, inbound)
            routes, destinations = _routing(event)
            jobs = [new_job(event, routes[0], d, "v1", RETRY_SPEC) for d in destinations]
            routed = (
                history_entry(Step.ROUTED, routes=routes, destinations=destinations)
                if jobs
                else history_entry(Step.UNROUTED, rules_version="v1")
            )
            entries = [history_entry(Step.RECEIVED, rules_version="v1"), routed]
            batch.append((event, entries, jobs, [5.0] * len(jobs)))
            roll = rnd.random()
            if jobs and roll < 0.85:  # what became of them
                fate = DONE if roll < 0.75 else DEAD if roll < 0.8 else RETRY
                settles.append((event["id"], {job["delivery_id"]: fate for job in jobs[:1]}))
                if len(jobs) > 1:
                    settles.append((event["id"], {job["delivery_id"]: DONE for job in jobs[1:]}))
        store.route_batch(batch)
        pipe = store.client.pipeline(transaction=False)
        for event_id, fields in settles:
            store.index.settle(pipe, event_id, fields, now)
            for did, fate in fields.items():  # as the delivery transactions settle them
                if fate != RETRY:
                    store.pending.settle(pipe, state_keys.deliver_member(did))
        pipe.execute()
        settles.clear()
        if (start // BATCH) % 20 == 0:
            progress(f"  search: {start + BATCH:,} of {count:,} events routed")


def _query(spec: dict, now: float) -> EventQuery:
    fields = dict(spec)
    if "since" in fields:
        fields["since"] = now - 3600
    return EventQuery(**fields)


def _timed(store: Store, query: EventQuery, cursor: str | None, limit: int):
    t0 = time.perf_counter()
    page = search_events(store, query, cursor, limit)
    return (time.perf_counter() - t0) * 1000, page


def _zinterstore(store: Store, query: EventQuery, limit: int) -> float:
    """The other way to intersect: a temporary ZINTERSTORE, then the newest ``limit``."""
    sets = [state_keys.index(facet, value) for facet, value in query.facets()]
    t0 = time.perf_counter()
    tmp = state_keys.PREFIX + "bench:tmp"
    pipe = store.client.pipeline(transaction=True)
    pipe.zinterstore(tmp, sets, aggregate="MAX")
    pipe.zrange(tmp, "+inf", "-inf", desc=True, byscore=True, offset=0, num=limit + 1)
    pipe.delete(tmp)
    ids = pipe.execute()[1]
    store.events([i.decode() if isinstance(i, bytes) else i for i in ids[:limit]])
    return (time.perf_counter() - t0) * 1000


def run(
    events: int = 100_000, rounds: int = 20, limit: int = 50, progress=print, keep: bool = False
) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="relay-bench-search-"))
    server = EmbeddedRedis(directory / "redis", appendonly=False).start()
    try:
        store = Store(connect(server.url, timeout=30.0), 7 * 86400, 86400)
        rnd = random.Random(15)
        now = time.time()
        t0 = time.perf_counter()
        seed(store, events, rnd, now, progress)
        seed_s = time.perf_counter() - t0
        memory = store.client.info("memory")["used_memory"]
        index_keys = sum(1 for _ in store.client.scan_iter(state_keys.PREFIX + "idx:*", 1000))
        progress(f"  search: {events:,} events seeded in {seed_s:.1f} s; timing queries …")
        per_query: dict[str, list[float]] = {label: [] for label, _ in QUERIES}
        per_query["page 10 of destination=trace"] = []
        found: dict[str, int] = {}
        every: list[float] = []
        intersect_relay: list[float] = []
        intersect_zinter: list[float] = []
        for _ in range(rounds):
            for label, spec in QUERIES:
                query = _query(spec, now)
                ms, page = _timed(store, query, None, limit)
                per_query[label].append(ms)
                every.append(ms)
                found[label] = len(page.items)
                if len(query.facets()) > 1:
                    intersect_relay.append(ms)
                    intersect_zinter.append(_zinterstore(store, query, limit))
            cursor = None
            for _page in range(10):  # deep paging: the tenth page
                ms, page = _timed(store, EventQuery(destination="trace"), cursor, limit)
                cursor = page.next_cursor
            per_query["page 10 of destination=trace"].append(ms)
            every.append(ms)
        return {
            "events": events,
            "limit": limit,
            "rounds": rounds,
            "seed_s": seed_s,
            "redis_mb": memory / 1e6,
            "index_sets": index_keys,
            "p50_ms": percentile(every, 50),
            "p95_ms": percentile(every, 95),
            "max_ms": max(every),
            "queries": {
                label: {
                    "p50_ms": percentile(times, 50),
                    "p95_ms": percentile(times, 95),
                    "items": found.get(label, limit),
                }
                for label, times in per_query.items()
            },
            "intersections": {
                "walk_p95_ms": percentile(intersect_relay, 95),
                "zinterstore_p95_ms": percentile(intersect_zinter, 95),
            },
        }
    finally:
        server.stop()
        if not keep:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
