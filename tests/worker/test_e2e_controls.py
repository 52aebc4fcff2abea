"""Destination controls end to end: real workers (two where the limit is shared), the
suite's real Redis, a real HTTP receiver. Rate limit, concurrency, circuit breaker, pause
for a deploy; waits spend no attempt and every accepted event arrives."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import pytest
import requests

from relay.cli.embedded import free_port
from relay.ops.broker import make_celery
from relay.settings import load_settings
from relay.state.keys import PENDING, deliver_member
from relay.worker import sweeper
from tests.conftest import load_fixture
from tests.harness import ROOT, WEBHOOK, WorkerProcess, wait_until
from tests.httpsink import Answer, HttpSink

pytestmark = pytest.mark.e2e


def rules(sink, controls: str, more: str = "", tail: str = "") -> str:
    """``crm`` (an HTTP destination of ``sink``) with ``controls``; ``more`` destinations
    and a ``tail`` (top-level keys) if given."""
    return f"""
version: 1
destinations:
  crm:
    type: http
    url: {sink.url("/crm")}
    timeout: 2s
    retry: {{attempts: 20, initial: 50ms, max: 100ms}}
{controls}
{more}
routes:
  - name: all
    match: {{}}
    to: [crm]
{tail}
"""


def inbound(n: int) -> dict:
    return {**load_fixture("inbound-sms.json"), "tid": f"tid-{n}", "message": f"hello {n}"}


def post_many(relay, count: int) -> list[str]:
    return [relay.post(inbound(n)) for n in range(count)]


def relay_cli(relay, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        cwd=ROOT,
        env=relay.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def second_worker(relay, tmp_path) -> WorkerProcess:
    worker = WorkerProcess(relay.env, tmp_path / "worker2.log").start()
    return worker


def distinct_events(sink) -> set[str]:
    return {request.json()["id"] for request in sink.requests}


def attempts_counted(relay, event_id: str) -> int:
    return len(relay.steps(event_id, "attempt"))


#: seconds an attempt may take to reach the receiver after the rate limit let it go (the
#: worker thread picked, the request built and sent, the sink's thread started): measured
#: up to 0.3 s on a loaded 2-core machine; three times that
LAG = 1.0


def most_allowed(rate: float, width: float) -> int:
    """The most arrivals any ``width`` seconds may see at the receiver under ``rate``/s.

    The limit is a token bucket holding one token that refills every ``1/rate`` s
    (relay/state/controls.py): burst 1, so at most ``1 + rate * W`` attempts go in any W
    seconds. An arrival lags its grant by 0 to ``LAG`` s, so the arrivals of ``width``
    seconds were granted within ``width + LAG``."""
    return 1 + int(rate * (width + LAG))


def most_in_a_window(arrivals: list[float], width: float) -> int:
    return max(sum(1 for t in arrivals if start <= t < start + width) for start in arrivals)


def test_rate_limit_is_shared_by_two_workers(start_relay, sink, tmp_path):
    relay = start_relay(rules(sink, "    rate_limit: 10/s"))
    other = second_worker(relay, tmp_path)
    try:
        ids = post_many(relay, 200)
        wait_until(lambda: len(distinct_events(sink)) == 200, timeout=60, interval=0.2)
        wait_until(lambda: relay.store.pending.count() == 0, 10)  # all settled: no more
        arrivals = sorted(request.at for request in sink.requests)
        assert len(arrivals) == 200
        worst = most_in_a_window(arrivals, 1.0)
        assert worst <= most_allowed(10, 1.0), f"{worst} requests in one second"
        # and over the whole run: 200 at 10/s take 19.9 s of grants
        assert arrivals[-1] - arrivals[0] >= 199 / 10 - LAG
        # throttled waits spend no attempt: each event was tried once, and delivered
        for event_id in ids[:20]:
            assert attempts_counted(relay, event_id) == 1
        assert relay.store.pending.count() == 0
    finally:
        other.stop()


def test_a_backlog_longer_than_one_hop_keeps_its_turns(start_relay, sink):
    """Waiters whose slot is further than one hop (half the visibility timeout: 2 s here)
    keep it through the hops. Asking the bucket again after each hop would put them
    behind every other waiter, and a backlog longer than one hop would then trickle out
    a few per hop instead of at the rate limit."""
    relay = start_relay(rules(sink, "    rate_limit: 20/s"), RELAY_VISIBILITY_TIMEOUT="4s")
    started = time.monotonic()
    # one request: the 120 are refused at once, 6 s of slots, three hops
    answer = relay.client.post(WEBHOOK, json=[inbound(n) for n in range(120)])
    assert answer.status_code == 200, answer.json
    ids = answer.json["accepted"]
    assert len(ids) == 120
    # at the limit that is 6 s; far less than the minute a trickle would take
    wait_until(lambda: len(distinct_events(sink)) == 120, timeout=30, interval=0.2)
    elapsed = time.monotonic() - started
    wait_until(lambda: relay.store.pending.count() == 0, 10)  # all settled: no more
    arrivals = sorted(request.at for request in sink.requests)
    worst = most_in_a_window(arrivals, 1.0)
    assert worst <= most_allowed(20, 1.0), f"{worst} requests in one second"
    assert len(arrivals) == 120, f"{len(arrivals)} requests in {elapsed:.1f}s"
    assert all(attempts_counted(relay, event_id) == 1 for event_id in ids)


def test_concurrency_is_never_exceeded_across_two_workers(start_relay, sink, tmp_path):
    relay = start_relay(rules(sink, "    concurrency: 3"))
    other = second_worker(relay, tmp_path)
    lock = threading.Lock()
    live, peak = [0], [0]

    def arrived(request):
        """Runs in the sink's handler thread before it answers: a request counts as in
        flight from its arrival until just before its answer goes out (so never more
        than relay counts: its slot is freed only after the answer)."""
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.2)
        with lock:
            live[0] -= 1

    sink.on_request = arrived
    try:
        ids = post_many(relay, 30)
        wait_until(lambda: len(distinct_events(sink)) >= 30, timeout=40, interval=0.2)
        assert peak[0] <= 3
        assert peak[0] == 3  # the limit was reached, so it was what held them back
        assert len(sink.requests) == 30  # one attempt each: waiting spent none
        wait_until(lambda: relay.store.pending.count() == 0, 10)
        assert all(attempts_counted(relay, event_id) == 1 for event_id in ids)
    finally:
        other.stop()


def test_circuit_opens_probes_once_and_drains_when_the_receiver_recovers(start_relay, sink):
    with HttpSink() as hooks:
        _circuit(start_relay, sink, hooks)


def _circuit(start_relay, sink, hooks):
    failing = Answer(status=503)
    more = f"  ops-hook: {{type: http, url: '{hooks.url('/alerts')}'}}"
    tail = """
notifications:
  - name: trouble
    on: [circuit_open, circuit_closed]
    group_by: [destination, kind]
    group_wait: 100ms
    group_interval: 1m
    to: [ops-hook]
"""
    controls = "    concurrency: 1\n    circuit_breaker: {failures: 5, cooldown: 1s}"
    port = free_port()
    relay = start_relay(rules(sink, controls, more, tail), RELAY_WORKER_METRICS_PORT=str(port))
    crm = lambda: [r for r, status in sink.answered() if r.path == "/crm"]  # noqa: E731
    sink.script(*[failing] * 6)  # five to open it, then the first probe fails too
    ids = post_many(relay, 10)
    wait_until(lambda: len(crm()) >= 5, 20)
    wait_until(lambda: relay.store.controls.circuits(["crm"])["crm"].state == "open", 5)
    # the receiver recovers: the next probe closes the circuit and the backlog drains
    wait_until(lambda: all(relay.steps(i, "delivered") for i in ids), timeout=20)
    assert relay.store.controls.circuits(["crm"])["crm"].state == "closed"
    statuses = [status for r, status in sorted(sink.answered(), key=lambda a: a[0].at)]
    assert statuses == [503] * 6 + [200] * 10
    arrivals = sorted(r.at for r in crm())
    # no attempt during a cooldown (1 s): the 5th failure opened the circuit after it
    # arrived, so the probe came at least 1 s after it; the probe failed, so the next
    # (the one that closed it) at least 1 s after that. A probe's successor cannot be
    # earlier whatever the load: each gap is measured from before the circuit's change
    assert arrivals[5] - arrivals[4] >= 1.0, arrivals
    assert arrivals[6] - arrivals[5] >= 1.0, arrivals
    # waits spent no attempt: 6 failures + 10 successes were the only ones counted
    assert sum(attempts_counted(relay, event_id) for event_id in ids) == 16
    # the notification hook (relay.worker.alerts) got one open and one close
    alerts = lambda: [r.body.decode() for r in hooks.requests]  # noqa: E731
    wait_until(lambda: len(alerts()) >= 2, 10)
    time.sleep(0.5)
    assert len(alerts()) == 2
    assert sum("circuit_open" in text for text in alerts()) == 1
    assert sum("circuit_closed" in text for text in alerts()) == 1
    # the worker's metrics: waits by reason, and the circuit's state read from Redis
    scraped = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    waits = re.search(
        r'relay_destination_waits_total\{destination="crm",reason="circuit"\} (\d+)', scraped
    )
    assert waits and int(waits.group(1)) >= 9  # every other delivery waited at least once
    assert 'relay_destination_circuit_state{destination="crm"} 0.0' in scraped


def test_pause_for_a_deploy_then_resume(start_relay, sink, tmp_path):
    relay = start_relay(rules(sink, "    rate_limit: 100/s"))
    other = second_worker(relay, tmp_path)
    try:
        paused = relay_cli(relay, "destinations", "pause", "crm")
        assert paused.returncode == 0, paused.stderr
        assert "paused crm until resumed" in paused.stdout
        ids = post_many(relay, 100)

        def parked():
            members = relay.store.client.smembers("relay:dest:crm:parked")
            return len(members) == 100

        wait_until(parked, timeout=30, interval=0.2)
        time.sleep(0.5)
        assert sink.requests == []
        # answered 200, waiting: pending, and in the outbox the sweeper watches
        assert relay.store.pending.count() == 100
        assert relay.store.pending.get(deliver_member(f"{ids[0]}:crm")) is not None
        assert relay.steps(ids[0], "delivered") == []
        shown = relay_cli(relay, "events", "show", ids[0], "--json")
        (event,) = json.loads(shown.stdout)["events"]
        assert [(d["destination"], d["state"]) for d in event["deliveries"]] == [("crm", "pending")]
        assert attempts_counted(relay, ids[0]) == 0
        resumed = relay_cli(relay, "destinations", "resume", "crm")
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed crm: 100 waiting deliveries sent again" in resumed.stdout
        # at once (the parked deliveries published again), not at the next recheck (60 s)
        wait_until(lambda: len(distinct_events(sink)) == 100, timeout=30, interval=0.1)
        assert len(sink.requests) == 100
        wait_until(lambda: relay.store.pending.count() == 0, 10)
        assert all(attempts_counted(relay, event_id) == 1 for event_id in ids)
    finally:
        other.stop()


def test_a_timed_pause_ends_by_itself(start_relay, sink):
    relay = start_relay(rules(sink, ""))
    started = time.monotonic()
    relay.store.controls.pause("crm", 1.5)
    event_id = relay.post(inbound(1))
    relay.finished(event_id)
    (request,) = sink.requests
    # the pause (Redis's clock) began after ``started``: nothing arrived before it ended
    assert request.at - started >= 1.5 - 0.01  # 10 ms: Redis's clock against ours
    assert attempts_counted(relay, event_id) == 1


def test_a_paused_delivery_taken_over_again_and_again_is_not_poison(start_relay, sink):
    """Work that never settles is poison after RELAY_POISON_AFTER republications; a
    delivery parked by a pause (or an open circuit) does not settle either, but a worker
    handled each copy and put it back to wait: it starts its count afresh, so restarts
    of relay during a long pause do not move the paused deliveries to the dead letters."""
    relay = start_relay(rules(sink, ""))
    relay.store.controls.pause("crm")
    event_id = relay.post(inbound(1))
    member = deliver_member(f"{event_id}:crm")
    client = relay.store.client
    wait_until(lambda: client.sismember("relay:dest:crm:parked", member), 15)
    celery = make_celery(load_settings(relay.env))
    try:
        for _ in range(4):  # as when four workers that held it stopped, one after another
            due = client.zscore(PENDING, member)
            spec = relay.store.pending.get(member)
            assert sweeper.republish(celery, relay.store, member, spec, poison_after=2)
            # the worker took the copy, found crm paused and parked it again
            wait_until(lambda due=due: client.zscore(PENDING, member) > due, 15)
    finally:
        celery.close()
    assert relay.store.dead_letters.get(f"{event_id}:crm") is None
    assert sink.requests == []
    resumed = relay_cli(relay, "destinations", "resume", "crm")
    assert resumed.returncode == 0, resumed.stderr
    assert [entry["step"] for entry in relay.finished(event_id)] == ["delivered"]
    assert attempts_counted(relay, event_id) == 1
