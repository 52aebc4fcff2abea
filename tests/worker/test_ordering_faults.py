"""Ordered delivery under faults: two Procfile workers (one SIGKILLed half-way), a receiver
that answers 10% of requests 503 after a random latency of 0-60 ms, many keys at once.

What the receiver saw must show, per key (``transid``): every attempt (repeats and 503s
included) in the order relay accepted the events (a delivery may be sent again, never
after a later one of its key), and never two requests in flight at once; while requests of
different keys did overlap. And every accepted event was delivered.
"""

from __future__ import annotations

import collections
import random
import signal
from dataclasses import dataclass

import pytest

from relay.settings import load_settings
from relay.state import Store, connect
from relay.web.app import create_app
from tests.harness import WorkerProcess, fresh_db_url, relay_env, wait_until
from tests.httpsink import Answer, HttpSink

pytestmark = pytest.mark.faults

KEYS = 40  #: transids
PER_KEY = 5  #: receipts of each, accepted in this order
RULES = """
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 2s
    retry: {{attempts: 20, initial: 100ms, max: 500ms}}
    ordered_by: transid
routes:
  - {{name: all, to: [hook]}}
"""


@dataclass(frozen=True)
class Seen:
    """One request as the receiver saw it (monotonic times)."""

    delivery_id: str
    key: str
    arrived: float
    answered: float
    status: int


class Receiver(HttpSink):
    """Answers 503 to 10% of requests (seeded), each after 0-60 ms; records every one."""

    def __init__(self, seed: int = 21) -> None:
        super().__init__()
        draws = random.Random(seed)  # drawn under the sink's lock, one request at a time
        self.respond = lambda request: Answer(
            503 if draws.random() < 0.1 else 200, delay=draws.uniform(0.0, 0.06)
        )

    def seen(self) -> list[Seen]:
        """The requests answered so far, in the order they arrived (not one the killed
        worker cut short before its body: no delivery)."""
        answered = [
            Seen(request.header("webhook-id"), request.json()["transid"], request.at, at, status)
            for request, status, at in self.exchanges()
            if at is not None and request.body
        ]
        return sorted(answered, key=lambda seen: seen.arrived)


def receipt(transid: str, number: int) -> dict:
    return {
        "deliveryInfoNotification": {
            "deliveryInfo": {
                "timeStamp": "2024-01-01T00:00:00.000Z",
                "deliveryStatus": "Delivered",
                "code": "7500",
                "destination": "447700900123",
            },
            "transid": transid,
            "callbackData": f"n={number}",  # a payload of its own: not a duplicate
        }
    }


def accept_interleaved(client, rnd: random.Random) -> dict[str, int]:
    """Post every key's receipts, keys interleaved, some in batches: each accepted event id
    → its place in its key's accept order."""
    todo = {f"T{k:02d}": list(range(PER_KEY)) for k in range(KEYS)}
    place: dict[str, int] = {}
    while todo:
        batch = []
        for transid in rnd.sample(sorted(todo), min(len(todo), rnd.randint(1, 4))):
            batch.append((transid, todo[transid].pop(0)))
            if not todo[transid]:
                del todo[transid]
        answer = client.post("/webhooks/webex-connect", json=[receipt(t, n) for t, n in batch])
        assert answer.status_code == 200, answer.json
        for event_id, (_, number) in zip(answer.json["accepted"], batch, strict=True):
            place[event_id] = number
    return place


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def test_order_per_key_survives_503s_latency_and_a_worker_killed_half_way(
    redis_server, tmp_path, receiver, fault_report
):
    url = fresh_db_url(redis_server)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=receiver.url("/hook")))
    # as in the other fault tests: a retry's message a worker received and died with before
    # it could record it (a few ms) comes back from the broker after 3 s, not 5 minutes
    env = relay_env(url, RELAY_RULES=str(rules), RELAY_VISIBILITY_TIMEOUT="3s")
    workers = [WorkerProcess(env, tmp_path / f"worker{i}.log").start() for i in range(2)]
    try:
        client = create_app(load_settings(env)).test_client()
        place = accept_interleaved(client, random.Random(5))
        total = KEYS * PER_KEY
        assert len(place) == total
        wait_until(lambda: sum(s.status == 200 for s in receiver.seen()) >= total // 2, 60)
        workers[0].stop(signal.SIGKILL)  # its deliveries under way: taken over by the other
        ok = lambda: {s.delivery_id for s in receiver.seen() if s.status == 200}  # noqa: E731
        wait_until(lambda: len(ok()) == total, 90, interval=0.2)
        store = Store(connect(url), 3600, 3600)
        wait_until(lambda: store.pending.count() == 0, 30, interval=0.2)
        store.client.close()
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL)
    seen = receiver.seen()
    assert {s.delivery_id.rsplit(":", 1)[0] for s in seen if s.status == 200} == set(place)
    by_key = collections.defaultdict(list)
    for request in seen:
        by_key[request.key].append(request)
    order = {
        key: [place[s.delivery_id.rsplit(":", 1)[0]] for s in items]
        for key, items in by_key.items()
    }
    violations = {key: places for key, places in order.items() if places != sorted(places)}
    assert not violations, violations  # the order relay accepted them in, per key
    overlapping = {
        key: [
            (a.delivery_id, b.delivery_id)
            for a, b in zip(items, items[1:], strict=False)
            if b.arrived < a.answered
        ]
        for key, items in by_key.items()
    }
    assert not any(overlapping.values()), overlapping  # at most one in flight per key
    assert any(  # keys went in parallel
        a.key != b.key and b.arrived < a.answered for a, b in zip(seen, seen[1:], strict=False)
    )
    repeats = sum(s.status == 200 for s in seen) - total
    fault_report.append(
        f"ordered per key, one of two workers SIGKILLed: {total} accepted ({KEYS} keys x "
        f"{PER_KEY}), {total} delivered, {len(seen)} requests ({sum(s.status == 503 for s in seen)}"
        f" answered 503), {repeats} repeated, 0 out of order, never two in flight per key"
    )
