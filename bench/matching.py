"""Matching cost: µs per event of ``Ruleset.match`` with 10, 1,000 and 10,000 routes.

In-process, no servers. The rulesets are generated like a multi-tenant file grows: each
route names a tenant (``source``), a campaign (``callback.campaign``) or a keyword by
equality, with status/code/kind conditions, a fifth of them also a ``prefix``,
``regex``, ``contains`` or ``not`` on another field, 5 % with ``continue: true``; plus a
few routes (1 %, at most 10) that have no equality condition at all (a regex on the text,
a prefix on the destination), which every event must be tested against. The events are
the seed payloads (tests/fixtures/webex-connect) turned into events by relay's own parser
with tenants, campaigns, keywords, codes and numbers drawn from the same pools (and some
that no route names).

    python -m bench matching [--seconds S]
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path

from relay.codes import CODE_DESCRIPTIONS
from relay.parsing import build_events
from relay.rules import load_rules_text

SEEDS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "webex-connect"
SIZES = (10, 1000, 10000)
STATUSES = ["Delivered", "Failed", "Un-Delivered", "Submitted", "Clicked", "Rejected"]
WORDS = ["HELP", "STOP", "INFO", "JOIN", "START", "PROMO", "YES", "NO", "BALANCE", "ORDER"]
CODES = sorted(CODE_DESCRIPTIONS)


def pools(routes: int) -> dict[str, list[str]]:
    """Values rules and events draw from; they grow with the ruleset like tenants do."""
    tenants = max(3, routes // 10)
    return {
        "source": [f"tenant-{i:05d}" for i in range(tenants)],
        "campaign": [f"spring-{i:05d}" for i in range(max(3, routes // 5))],
        "keyword": WORDS + [f"KW{i:05d}" for i in range(max(3, routes // 5))],
    }


def _quote(value: str) -> str:
    return json.dumps(value)


def _route(i: int, rnd: random.Random, p: dict[str, list[str]]) -> str:
    """One generated route as a YAML flow mapping."""
    tenant = _quote(rnd.choice(p["source"]))
    shape = rnd.randrange(6)
    if shape == 0:
        match = f"kind: delivery_receipt, source: {tenant}, status: [Failed, Un-Delivered]"
    elif shape == 1:
        codes = ", ".join(_quote(c) for c in rnd.sample(CODES, 2))
        match = f"source: {tenant}, code: [{codes}]"
    elif shape == 2:
        words = ", ".join(_quote(w) for w in rnd.sample(p["keyword"], 2))
        match = f"kind: inbound_message, source: {tenant}, keyword: [{words}]"
    elif shape == 3:
        match = (
            f"callback.campaign: {_quote(rnd.choice(p['campaign']))}, "
            f"status: {rnd.choice(STATUSES)}"
        )
    elif shape == 4:
        match = f"keyword: {_quote(rnd.choice(p['keyword']))}, kind: inbound_message"
    else:
        match = f"source: {tenant}, final: true"
    extra = rnd.randrange(20)
    if extra == 0:
        match += f", destination: {{prefix: {_quote('44' + str(rnd.randrange(10, 99)))}}}"
    elif extra == 1:
        match += r', text: {regex: "(?i)order\\s*#?\\d{6}"}'
    elif extra == 2:
        match += ", description: {contains: [invalid, expired]}"
    elif extra == 3 and "code:" not in match:
        match += f", code: {{not: [{_quote(rnd.choice(CODES))}]}}"
    cont = ", continue: true" if rnd.random() < 0.05 else ""
    to = rnd.choice(["[trace]", "[crm]", "[crm, trace]"])
    return f"  - {{name: r{i:05d}, match: {{{match}}}, to: {to}{cont}}}"


def _unindexed(i: int, rnd: random.Random) -> str:
    match = rnd.choice(
        [
            r'text: {regex: "(?i)\\b(refund|cancel)\\b"}',
            f"destination: {{prefix: {_quote('4477' + str(rnd.randrange(10)))}}}",
            "additional_info: {contains: Mozilla}, status: {not: Delivered}",
        ]
    )
    return f"  - {{name: u{i:05d}, match: {{{match}}}, to: [trace]}}"


def ruleset_text(routes: int, seed: int = 1) -> str:
    rnd = random.Random(seed)
    p = pools(routes)
    unindexed = max(1, min(10, routes // 100))
    positions = set(rnd.sample(range(routes), unindexed))
    lines = [
        "version: 1",
        "destinations:",
        "  trace: {type: log}",
        "  crm: {type: http, url: 'https://crm.internal/sms'}",
        "routes:",
    ]
    lines += [_unindexed(i, rnd) if i in positions else _route(i, rnd, p) for i in range(routes)]
    lines.append("default: {to: [trace]}")
    return "\n".join(lines) + "\n"


def events(routes: int, count: int = 2000, seed: int = 2) -> list[dict]:
    """``count`` events from the seed payloads, fields drawn from the pools (a quarter from
    values no route names)."""
    rnd = random.Random(seed)
    p = pools(routes)
    seeds = [json.loads(path.read_text()) for path in sorted(SEEDS.glob("*.json"))]

    def pick(pool: list[str], miss: str) -> str:
        return rnd.choice(pool) if rnd.random() < 0.75 else f"{miss}-{rnd.randrange(10**6)}"

    out = []
    for i in range(count):
        payload = json.loads(json.dumps(seeds[i % len(seeds)]))
        number = f"44{rnd.randrange(10, 99)}{rnd.randrange(10**7):07d}"
        if "deliveryInfoNotification" in payload:
            note = payload["deliveryInfoNotification"]
            note["transid"] = f"bench-{i}"
            note["callbackData"] = f"campaign={pick(p['campaign'], 'other')};batch={i % 7}"
            info = note["deliveryInfo"]
            info["destination"] = number
            if rnd.random() < 0.5:
                info["code"] = rnd.choice(CODES)
        else:
            payload["tid"] = f"bench-{i}"
            payload["oa"] = number
            word = pick(p["keyword"], "WORD")
            tail = rnd.choice(["", " order #123456", " please", " refund now"])
            payload["message"] = f"{word}{tail}"
        source = pick(p["source"], "unknown")
        out += build_events(payload, source, frozenset())[0]
    return out


def measure(ruleset, evs: list[dict], budget: float) -> tuple[float, int]:
    """Best-of-repeats µs per event (repeats until ``budget`` s), and repeats done."""
    match = ruleset.match
    for event in evs:  # warm
        match(event)
    best, repeats, start = float("inf"), 0, time.perf_counter()
    while repeats < 3 or time.perf_counter() - start < budget:
        t0 = time.perf_counter_ns()
        for event in evs:
            match(event)
        best = min(best, (time.perf_counter_ns() - t0) / len(evs) / 1000)
        repeats += 1
        if repeats >= 50:
            break
    return best, repeats


def run(seconds: float = 2.0, sizes: tuple[int, ...] = SIZES, scan: bool = True) -> dict:
    """Per size: µs/event (best of repeats), load time, share of events a route (not the
    default) matched, candidates per event the index left to test; and the same match
    without the index (``scan``) for comparison."""
    results = {}
    for size in sizes:
        text = ruleset_text(size)
        t0 = time.perf_counter()
        ruleset = load_rules_text(text, f"generated-{size}.yaml")
        load_s = time.perf_counter() - t0
        evs = events(size)
        us, repeats = measure(ruleset, evs, seconds)
        hits = sum(1 for e in evs if ruleset.match(e)[0].route != "default")
        index = getattr(ruleset, "_index", None)
        candidates = (
            sum(len(index.candidates(e)) for e in evs) / len(evs) if index is not None else None
        )
        row = {
            "routes": size,
            "us_per_event": us,
            "repeats": repeats,
            "events": len(evs),
            "load_s": load_s,
            "matched_share": hits / len(evs),
            "candidates_per_event": candidates,
        }
        if scan:
            unindexed = replace(ruleset, indexed=False)
            few = evs[: max(50, min(len(evs), 200_000 // size))]
            row["scan_us_per_event"], _ = measure(unindexed, few, min(seconds, 1.0))
            assert all(unindexed.match(e) == ruleset.match(e) for e in few[:50])
        results[str(size)] = row
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
