"""Dead-letter pages over 100,000 dead letters: the admin API and the console, over HTTP.

A private Redis is filled through relay's own code: dead letters of failed receipts
(built from a seed payload by relay's parser, three attempts each, four destinations),
stored by ``DeadLetters.stage`` in pipelined transactions as the delivery transactions
store them, up to ``RELAY_DEAD_LETTER_MAX`` (100,000). relay's web runs under gunicorn
with the Procfile's settings (no workers: nothing is delivered), and a client on
keep-alive connections times, from request to the last byte of the answer:

- ``GET /api/dead-letters``: the first page (the default 1,000), pages of 100 of one
  destination, and a page 50 cursors deep;
- the console's ``/ui/dead-letters`` (a page of 200), filtered by destination and by age, and
  its overview (``/ui/``: the dead-letter counts and newest reasons of every destination,
  besides the event counts and the destinations' state).

For scale, it also times what every one of those views did before the indexes —
reading and decoding every dead letter (``list_dead_letters``, in-process) — and the
one-time backfill that indexes dead letters stored before the per-destination index
existed.

    python -m bench deadletters
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import requests

from bench.common import Stack, percentile
from relay.cli.embedded import EmbeddedRedis
from relay.events import dead_letter, new_attempt, new_job
from relay.ops.dead_letters import list_dead_letters
from relay.parsing import build_events
from relay.state import Store, connect
from relay.state import keys as state_keys
from relay.web.console.dead_letters import SHOWN

SEED = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "webex-connect"
TOKEN = "bench-admin-token-0123456789"
DESTINATIONS = ["crm", "trace", "helpdesk", "billing"]
RETRY_SPEC = {"attempts": 3, "initial": 2.0, "max": 60.0}
BATCH = 1000
RULES = """version: 1
destinations:
  crm: {type: http, url: "http://127.0.0.1:9/crm"}
  trace: {type: log}
  helpdesk: {type: log}
  billing: {type: http, url: "http://127.0.0.1:9/billing"}
routes:
  - {name: failures, to: [crm, trace, helpdesk, billing]}
"""
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def seed(store: Store, count: int, rnd: random.Random, progress) -> None:
    payload = json.loads((SEED / "receipt-failed-invalid-address.json").read_text())
    (event,), _ = build_events(payload, "default", set())
    for start in range(0, count, BATCH):
        pipe = store.client.pipeline(transaction=True)
        for number in range(start, min(start + BATCH, count)):
            destination = DESTINATIONS[number % len(DESTINATIONS)]
            job = new_job(
                {**event, "id": f"E{number:07d}"}, "failures", destination, "v1", RETRY_SPEC
            )
            attempts = [
                new_attempt(n, "2024-01-01T00:00:00Z", "transient", 503, "HTTP 503", 0.05)
                for n in (1, 2, 3)
            ]
            reason = f"HTTP 503 after 3 attempts ({rnd.getrandbits(32):x})"
            store.dead_letters.stage(pipe, dead_letter(job, reason, attempts))
        pipe.execute()
        store.dead_letters.trim()
        if (start // BATCH) % 20 == 0:
            progress(f"  deadletters: {start + BATCH:,} of {count:,} stored")


def _login(session: requests.Session, base: str) -> None:
    form = session.get(base + "/ui/login", timeout=10)
    token = _CSRF.search(form.text)
    assert token, "no CSRF token on the login page"
    answer = session.post(
        base + "/ui/login",
        data={"token": TOKEN, "csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302, answer.text


def _timed(session: requests.Session, url: str, **params: str) -> tuple[float, requests.Response]:
    t0 = time.perf_counter()
    answer = session.get(url, params=params, timeout=30)
    elapsed = (time.perf_counter() - t0) * 1000
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
    return elapsed, answer


def _deep_cursor(session: requests.Session, api: str, pages: int) -> str:
    cursor = ""
    for _ in range(pages):
        cursor = session.get(api, params={"limit": "100", "cursor": cursor}, timeout=30).json()[
            "next_cursor"
        ]
    return cursor


def _time_pages(base: str, rounds: int) -> dict[str, list[float]]:
    api, console = base + "/api/dead-letters", base + "/ui/dead-letters"
    times: dict[str, list[float]] = {}
    with requests.Session() as client, requests.Session() as browser:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        _login(browser, base)
        deep = _deep_cursor(client, api, 50)
        queries = [
            ("API first page (1,000)", client, api, {}),
            (
                "API page of 100, destination=crm",
                client,
                api,
                {"destination": "crm", "limit": "100"},
            ),
            ("API page of 100, 50 cursors deep", client, api, {"limit": "100", "cursor": deep}),
            (f"console page ({SHOWN} rows)", browser, console, {}),
            ("console page, destination=helpdesk", browser, console, {"destination": "helpdesk"}),
            ("console page, newer_than=1h", browser, console, {"newer_than": "1h"}),
            ("console overview", browser, base + "/ui/", {}),
        ]
        for label, session, url, params in queries:  # once each first: connections, caches
            _timed(session, url, **params)
            times[label] = []
        for _ in range(rounds):
            for label, session, url, params in queries:
                times[label].append(_timed(session, url, **params)[0])
    return times


def _full_read_s(store: Store) -> float:
    t0 = time.perf_counter()
    items = list_dead_letters(store)
    elapsed = time.perf_counter() - t0
    assert items, "no dead letters read"
    return elapsed


def _backfill_s(store: Store) -> float:
    """The backfill from scratch, as after an upgrade: the per-destination sets dropped."""
    store.client.delete(
        state_keys.DEAD_INDEXED,
        state_keys.DEAD_DESTINATIONS,
        *(state_keys.dead_of(name) for name in DESTINATIONS),
    )
    fresh = Store(store.client, 86400, 86400)
    t0 = time.perf_counter()
    fresh.dead_letters.backfill()
    elapsed = time.perf_counter() - t0
    assert store.client.zcard(state_keys.dead_of("crm")) > 0, "the backfill indexed nothing"
    return elapsed


def run(dead_letters: int = 100_000, rounds: int = 20, progress=print, keep: bool = False) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="relay-bench-deadletters-"))
    server = EmbeddedRedis(directory / "redis", appendonly=False).start()
    try:
        store = Store(connect(server.url, timeout=60.0), 86400, 86400)
        t0 = time.perf_counter()
        seed(store, dead_letters, random.Random(9), progress)
        seed_s = time.perf_counter() - t0
        memory = store.client.info("memory")["used_memory"]
        progress(f"  deadletters: {dead_letters:,} stored in {seed_s:.1f} s; timing pages …")
        stack = Stack(RULES, workers=0, env={"RELAY_ADMIN_TOKEN": TOKEN}, redis=server)
        try:
            times = _time_pages(f"http://127.0.0.1:{stack.port}", rounds)
        finally:
            stack.close()
            if not keep:
                shutil.rmtree(stack.dir, ignore_errors=True)
        pages = [ms for values in times.values() for ms in values]
        full_read_s = _full_read_s(store)
        backfill_s = _backfill_s(store)
        return {
            "dead_letters": dead_letters,
            "stored": store.dead_letters.count(),
            "rounds": rounds,
            "seed_s": seed_s,
            "redis_mb": memory / 1e6,
            "p50_ms": percentile(pages, 50),
            "p95_ms": percentile(pages, 95),
            "max_ms": max(pages),
            "pages": {
                label: {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95)}
                for label, values in times.items()
            },
            "full_read_s": full_read_s,
            "backfill_s": backfill_s,
        }
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def details(dl: dict) -> list[str]:
    """The lines of ``python -m bench``'s table below the targets."""
    lines = [
        f"deadletters: {dl['stored']:,} dead letters (stored in {dl['seed_s']:.0f} s; Redis "
        f"{dl['redis_mb']:.0f} MB), relay's web under gunicorn, {dl['rounds']} rounds of each "
        "page over HTTP (keep-alive), p50 / p95 ms:"
    ]
    lines += [
        f"  {label}: {page['p50_ms']:.1f} / {page['p95_ms']:.1f}"
        for label, page in dl["pages"].items()
    ]
    lines.append(
        f"  reading every dead letter, as each of these views did before: "
        f"{dl['full_read_s']:.1f} s; indexing them all by destination (the one-time "
        f"backfill): {dl['backfill_s']:.1f} s"
    )
    return lines
