"""Ordered delivery per key (``ordered_by``) against the same destination unordered, in one
run: relay's web under gunicorn (the Procfile's settings), two workers, a local receiver.

- **many keys**: bursts of POSTs (one notification each, 4 per ``transid`` over 500
  transids, a key's requests 500 apart) to one destination, unordered then ordered by
  ``transid`` (the rules file rewritten between bursts: hot reload), in three pairs, the
  order alternating; events/s from the first POST to the last delivery, and the ordered ÷
  unordered ratio of each pair, their median and spread. The receiver
  checks, per key, the order of arrival and that no two were in flight at once;
- **next start**: 20 keys × 20 events posted at once to the ordered destination (a 20 ms
  receiver): per key, from the receiver's answer to delivery k to the arrival of k+1 (those
  whose event was accepted by then), p50 / p99 / max;
- **one blocked key**: 100 events/s for 10 s over 200 keys, and 10/s more to one more key,
  POST → delivered p99 of the 200 keys: that key delivered, or blocked (its first
  delivery dead-lettered with ``on_failure: block``: the rest wait, parked); three rounds
  each, alternating, and the median p99 of each.

    python -m bench ordered          # ≈ 2 minutes
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from email.message import Message

import requests

from bench import loadgen
from bench.common import HookServer, Stack, percentile

PATH = "/webhooks/webex-connect"
KEYS = 500  #: transids of the many-keys bursts
PER_KEY = 4  #: events of each in a burst
NEXT_KEYS, NEXT_PER_KEY = 5, 40  #: the next-start phase: keys, events of each
BLOCKED = "BLOCKED"  #: the transid whose deliveries the receiver refuses (400)
RULES = """version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 5s
    retry: {{attempts: 5, initial: 100ms, max: 1s}}{ordering}
routes: [{{name: all, to: [hook]}}]
"""
ORDERING = "\n    ordered_by: transid\n    on_failure: block"


@dataclass(frozen=True)
class Seen:
    key: str
    seq: int
    delivery_id: str
    arrived: float  #: monotonic, shared by every process of this machine
    answered: float
    status: int


class Receiver(HookServer):
    """Answers after ``delay`` s: 400 to the key :data:`BLOCKED`, else 200; records every
    request."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.first_delay = 0.0  #: for the first event of a key (its seq ends in 0s)
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        super().__init__()

    def answer(self, headers: Message, body: bytes) -> int:
        arrived = time.monotonic()
        event = json.loads(body)
        key = event.get("transid", "")
        status = 400 if key == BLOCKED else 200
        seq = int(str(event.get("callback", {}).get("n", "0"))[-9:] or 0)
        delay = self.first_delay if seq == 0 else self.delay
        if delay:
            time.sleep(delay)
        seen = Seen(key, seq, headers["webhook-id"], arrived, time.monotonic(), status)
        with self.lock:
            self.seen.append(seen)
        return status

    def take(self) -> list[Seen]:
        """What it saw since the last take, by arrival."""
        with self.lock:
            seen, self.seen = self.seen, []
        return sorted(seen, key=lambda item: item.arrived)


def receipt(key: str) -> str:
    """A delivery receipt of ``key`` whose ``@SEQ@`` makes each request's payload its own."""
    return json.dumps(
        {
            "deliveryInfoNotification": {
                "deliveryInfo": {"deliveryStatus": "Delivered", "code": "7500"},
                "transid": key,
                "callbackData": "n=@SEQ@",
            }
        }
    )


def set_rules(stack: Stack, receiver: Receiver, ordered: bool) -> None:
    """Rewrite the rules file and wait until the web processes and workers run it."""
    text = RULES.format(url=receiver.url, ordering=ORDERING if ordered else "")
    path = stack.dir / "rules.yaml"
    if path.read_text() == text:
        return
    path.write_text(text)
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    deadline = time.monotonic() + 30
    ready = stack.url.replace(PATH, "/readyz")
    while time.monotonic() < deadline:
        answers = {requests.get(ready, timeout=2).json().get("rules_version") for _ in range(8)}
        logs = [(stack.dir / f"worker{i}.log").read_text(errors="replace") for i in range(2)]
        if answers == {version} and all(f"version {version}" in log for log in logs):
            return
        time.sleep(0.3)
    raise RuntimeError(f"the rules did not reload; see {stack.dir}")


def post(stack: Stack, templates: list[str], spec: dict) -> dict:
    """POST with the load generator (request *i* with template *i* mod n): its result,
    ``accepted`` made a mapping, event id → when its request was sent."""
    result = loadgen.run_subprocess(
        {
            "port": stack.port,
            "path": PATH,
            "templates": templates,
            "collect": True,
            "nonce": os.urandom(4).hex(),
            **spec,
        }
    )
    return {**result, "accepted": dict(result["accepted"])}


def wait_for(seen: list[Seen], receiver: Receiver, count: int, timeout: float) -> None:
    """Collect into ``seen`` until ``count`` events were answered 2xx."""
    deadline = time.monotonic() + timeout
    done: set[str] = set()
    while time.monotonic() < deadline:
        for item in receiver.take():
            seen.append(item)
            if item.status == 200:
                done.add(item.delivery_id.rsplit(":", 1)[0])
        if len(done) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{count - len(done)} events not delivered within {timeout:g} s")


def order_problems(seen: list[Seen]) -> tuple[int, int]:
    """Per key: deliveries that arrived after a later one of their key, and requests that
    arrived while the one before was still unanswered."""
    by_key: dict[str, list[Seen]] = defaultdict(list)
    for item in seen:
        by_key[item.key].append(item)
    late = overlap = 0
    for items in by_key.values():
        for a, b in zip(items, items[1:], strict=False):
            late += b.seq < a.seq
            overlap += b.arrived < a.answered
    return late, overlap


def burst(stack: Stack, receiver: Receiver, ordered: bool, count: int) -> dict:
    set_rules(stack, receiver, ordered)
    templates = [receipt(f"K{k:04d}") for k in range(KEYS)]
    started = time.monotonic()
    ids = post(stack, templates, {"mode": "closed", "count": count, "concurrency": 16})["accepted"]
    seen: list[Seen] = []
    wait_for(seen, receiver, len(ids), 120)
    first = min(ids.values())
    last = max(item.answered for item in seen)
    late, overlap = order_problems(seen)
    return {
        "ordered": ordered,
        "events": len(ids),
        "events_per_s": len(ids) / (last - first),
        "seconds": last - first,
        "wall_s": time.monotonic() - started,
        "late": late,
        "overlap": overlap,
    }


def next_start(stack: Stack, receiver: Receiver) -> dict:
    """20 keys × 20 events at once (batches of one event per key), a 20 ms receiver that
    holds each key's first for 3 s: every later one is routed, and waits, parked, by then
    (the gaps measure the wake, not the routing of a burst)."""
    set_rules(stack, receiver, True)
    receiver.delay, receiver.first_delay = 0.02, 3.0
    keys = [f"N{k:02d}" for k in range(NEXT_KEYS)]
    accepted: dict[str, float] = {}
    session, nonce = requests.Session(), os.urandom(4).hex()
    for round_ in range(NEXT_PER_KEY):
        seq = f"{nonce}{round_:09d}"  # a payload of its own in every run
        body = [json.loads(receipt(k).replace("@SEQ@", seq)) for k in keys]
        answer = session.post(stack.url, json=body, timeout=10)
        now = time.monotonic()
        accepted.update({event_id: now for event_id in answer.json()["accepted"]})
    seen: list[Seen] = []
    wait_for(seen, receiver, len(accepted), 60)
    receiver.delay = receiver.first_delay = 0.0
    gaps = []
    by_key: dict[str, list[Seen]] = defaultdict(list)
    for item in seen:
        by_key[item.key].append(item)
    for items in by_key.values():
        for a, b in zip(items, items[1:], strict=False):
            if accepted[b.delivery_id.rsplit(":", 1)[0]] <= a.answered:  # b was waiting
                gaps.append(b.arrived - a.answered)
    late, overlap = order_problems(seen)
    return {
        "gaps": len(gaps),
        "p50_ms": percentile(gaps, 50) * 1000,
        "p99_ms": percentile(gaps, 99) * 1000,
        "max_ms": max(gaps) * 1000,
        "late": late,
        "overlap": overlap,
    }


def steady(stack: Stack, receiver: Receiver, blocked: bool) -> dict:
    """100 events/s for 10 s over 200 keys, and 10 events/s more to one more key: one the
    receiver takes (``SPARE``), or, ``blocked``, the key whose first delivery was refused
    and whose dead letter holds it (the later ones wait, parked). POST → delivered p50 /
    p99 of the 200 keys' events: the same load both ways, the one key blocked or not."""
    set_rules(stack, receiver, True)
    extra = BLOCKED if blocked else "SPARE"
    measured = [f"S{k:03d}" for k in range(200)]
    keys = [k for i, key in enumerate(measured) for k in ([key, extra] if i % 10 == 9 else [key])]
    rate = 100.0 * len(keys) / 200
    spec = {"mode": "open", "rate": rate, "seconds": 10, "concurrency": 32}
    result = post(stack, [receipt(key) for key in keys], spec)
    ids = result["accepted"]
    waiting = sum(keys[i % len(keys)] == BLOCKED for i in range(result["sent"]))
    seen: list[Seen] = []
    wait_for(seen, receiver, len(ids) - waiting, 60)
    mine = set(measured)
    times = {s.delivery_id.rsplit(":", 1)[0]: s.answered for s in seen if s.key in mine}
    latencies = [times[event_id] - sent for event_id, sent in ids.items() if event_id in times]
    return {
        "blocked": blocked,
        "events": len(latencies),
        "parked": waiting,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


#: the bursts, unordered (False) and ordered (True): three pairs, the order alternating
#: so that neither side always goes first and the machine's drift cancels out
PAIRS = (False, True, True, False, False, True)


def pair_ratios(bursts: list[dict]) -> list[float]:
    """ordered ÷ unordered events/s of each pair of bursts next to each other."""
    ratios = []
    for first, second in zip(bursts[::2], bursts[1::2], strict=True):
        ordered, unordered = (first, second) if first["ordered"] else (second, first)
        eps = unordered["events_per_s"]
        ratios.append(ordered["events_per_s"] / eps if eps else float("nan"))
    return ratios


def run(progress, keep: bool = False, count: int = KEYS * PER_KEY) -> dict:
    receiver = Receiver()
    stack = Stack(RULES.format(url=receiver.url, ordering=""), workers=2, worker_loglevel="INFO")
    started = time.monotonic()
    try:
        bursts = []
        for ordered in PAIRS:
            bursts.append(burst(stack, receiver, ordered, count))
            progress(
                f"  ordered: burst {'ordered' if ordered else 'unordered'}: "
                f"{bursts[-1]['events_per_s']:.0f} events/s"
            )
        gap = next_start(stack, receiver)
        progress(f"  ordered: next start p99 {gap['p99_ms']:.1f} ms")
        waits = []
        for blocked in (False, True, True, False, False, True):  # drift cancels out
            waits.append(steady(stack, receiver, blocked))
            progress(f"  ordered: steady, blocked={blocked}: p99 {waits[-1]['p99_ms']:.1f} ms")
    finally:
        stack.close()
        receiver.close()
        if not keep:
            shutil.rmtree(stack.dir, ignore_errors=True)
    rate = {
        flag: statistics.median(b["events_per_s"] for b in bursts if b["ordered"] == flag)
        for flag in (False, True)
    }
    ratios = pair_ratios(bursts)
    p99 = {
        flag: statistics.median(w["p99_ms"] for w in waits if w["blocked"] == flag)
        for flag in (False, True)
    }
    return {
        "bursts": bursts,
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "unordered_per_s": rate[False],
        "ordered_per_s": rate[True],
        "next_start": gap,
        "steady": waits,
        "blocked_p99_ms": p99[True],
        "unblocked_p99_ms": p99[False],
        "blocked_p99_ratio": p99[True] / p99[False],
        "p99_rounds": {
            flag: [w["p99_ms"] for w in waits if w["blocked"] == flag] for flag in (False, True)
        },
        # only the ordered bursts promise an order: an unordered one's deliveries of a key
        # may rightly arrive out of order (counted apart, to show what ordering changes)
        "late": sum(b["late"] for b in bursts if b["ordered"]) + gap["late"],
        "overlap": sum(b["overlap"] for b in bursts if b["ordered"]) + gap["overlap"],
        "unordered_late": sum(b["late"] for b in bursts if not b["ordered"]),
        "elapsed_s": time.monotonic() - started,
        "loadavg": os.getloadavg(),
    }


def details(r: dict) -> list[str]:
    """The bench's own lines for the report."""
    lines = ["ordered delivery (bench/ordered.py): bursts of 2,000 POSTs, 500 transids x 4"]
    for b in r["bursts"]:
        which = "ordered by transid" if b["ordered"] else "unordered"
        lines.append(f"  {which:>18}: {b['events_per_s']:.0f} events/s ({b['seconds']:.2f} s)")
    n = r["next_start"]
    lines.append(
        f"  next start after the head's answer ({n['gaps']} gaps): p50 {n['p50_ms']:.1f} /"
        f" p99 {n['p99_ms']:.1f} / max {n['max_ms']:.1f} ms"
    )
    for w in r["steady"]:
        which = "one key blocked" if w["blocked"] else "no key blocked"
        lines.append(
            f"  steady 100/s, {which:>15}: POST → delivered p50 {w['p50_ms']:.1f} / p99"
            f" {w['p99_ms']:.1f} ms ({w['events']} events, {w['parked']} parked)"
        )
    lines.append(
        f"  per key, ordered: {r['late']} out of order, {r['overlap']} overlapping"
        f" (unordered bursts: {r.get('unordered_late', 0)} out of order, as they may be); "
        f"{r['elapsed_s']:.0f} s, load average {' '.join(f'{x:.1f}' for x in r['loadavg'])}"
    )
    return lines


def spread_ms(values: list[float]) -> str:
    return f"{min(values):.0f}–{max(values):.0f} ms" if values else "—"


def rows(r: dict, targets: dict, mark) -> list[list[str]]:
    """The bench's rows of the summary table: figure, measured, target, ✓/✗."""
    n, t = r["next_start"], targets
    return [
        [
            "ordered by transid (500 keys) ÷ unordered, events/s, same destination, median "
            f"of {len(r['ratios'])} pairs",
            f"{r['ratio']:.0%} ({', '.join(f'{x:.0%}' for x in r['ratios'])}; "
            f"{min(r['ratios']):.0%}–{max(r['ratios']):.0%}; medians "
            f"{r['ordered_per_s']:.0f} ÷ {r['unordered_per_s']:.0f})",
            f"≥ {t['ordered_ratio']:.0%}",
            mark(r["ratio"] >= t["ordered_ratio"]) if len(r["ratios"]) >= 3 else "—",
        ],
        [
            "ordered: next of a key starts after the head's answer, p99",
            f"{n['p99_ms']:.1f} ms",
            f"≤ {t['ordered_next_p99_ms']:g} ms",
            mark(n["p99_ms"] <= t["ordered_next_p99_ms"]),
        ],
        [
            "ordered: other keys' p99 with one key blocked ÷ without (medians of 3)",
            f"{r['blocked_p99_ratio']:.2f}× ({r['blocked_p99_ms']:.0f} ÷"
            f" {r['unblocked_p99_ms']:.0f} ms; blocked {spread_ms(r['p99_rounds'][True])},"
            f" not {spread_ms(r['p99_rounds'][False])})",
            f"≤ {t['ordered_blocked_p99_ratio']:g}×",
            mark(r["blocked_p99_ratio"] <= t["ordered_blocked_p99_ratio"]),
        ],
        [
            "ordered: per key, out of order / two in flight at once",
            f"{r['late']} / {r['overlap']}",
            "0 / 0",
            mark(r["late"] == 0 and r["overlap"] == 0),
        ],
    ]
