"""Order per key survives `relay up` killed as a whole tree and restarted, and its
embedded Redis killed (and started again by `relay up`): every receipt of a key reaches the
receiver in the order relay accepted it, a key's first may be sent again (at least once)
but never after a later one, and nothing accepted is lost."""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import load_fixture
from tests.harness import wait_until
from tests.httpsink import Answer, HttpSink
from tests.worker.test_recovery import Up

pytestmark = pytest.mark.faults

KEYS = 4
RECEIPTS = 6


def rules(tmp_path: Path, sink: HttpSink) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\ndestinations:\n"
        f"  app: {{type: http, url: '{sink.url('/hook')}', ordered_by: transid, "
        "retry: {attempts: 50, initial: 200ms, max: 1s}}\n"
        "routes:\n  - {name: all, to: [app]}\n"
    )
    return path


def post_receipts(url: str) -> list[tuple[str, int]]:
    """KEYS transids × RECEIPTS receipts, round robin, each answered 200: (transid, n) in
    the order relay accepted them."""
    sent = []
    for n in range(RECEIPTS):
        for k in range(KEYS):
            body = load_fixture("receipt-delivered.json")
            notification = body["deliveryInfoNotification"]
            notification["transid"] = f"T{k}"
            notification["callbackData"] = f"n={n}"
            answer = requests.post(url, json=body, timeout=10)
            assert answer.status_code == 200, answer.text
            sent.append((f"T{k}", n))
    return sent


def arrivals(sink: HttpSink) -> dict[str, list[int]]:
    """Per transid, the receipts' numbers in the order the receiver got them (repeats
    included)."""
    per_key: dict[str, list[int]] = collections.defaultdict(list)
    for request in sink.requests:
        event = json.loads(request.body)
        per_key[event["transid"]].append(int(event["callback"]["n"]))
    return per_key


def assert_in_order(sink: HttpSink) -> int:
    """Every key complete and in accept order, a repeat only of the latest sent; the
    number of repeats."""
    repeats = 0
    for key, numbers in arrivals(sink).items():
        seen: list[int] = []
        for n in numbers:
            if seen and n == seen[-1]:
                repeats += 1  # the first sent again (at least once), before any later one
                continue
            assert n == len(seen), f"{key}: {numbers}"
            seen.append(n)
        assert seen == list(range(RECEIPTS)), f"{key}: {numbers}"
    assert len(arrivals(sink)) == KEYS
    return repeats


@pytest.fixture
def start_up():
    """``start_up(data_dir, rules, log) -> Up`` (``relay up`` as a user runs it), each
    stopped after the test."""
    started: list[Up] = []

    def start(data_dir: Path, rules: Path, log: Path) -> Up:
        started.append(Up(data_dir, rules, log))
        return started[-1]

    yield start
    for up in started:
        up.stop()


def test_order_survives_relay_up_killed_and_restarted(tmp_path, start_up, fault_report):
    with HttpSink(Answer(200, delay=1.0)) as sink:
        path, data_dir = rules(tmp_path, sink), tmp_path / "var"
        first = start_up(data_dir, path, tmp_path / "first.log")
        post_receipts(first.url())
        wait_until(lambda: len(sink.requests) >= KEYS * 2, 30, 0.05)  # a few of each key
        time.sleep(1.2)  # past one append-only fsync
        sent_before = len(sink.requests)
        first.kill_tree()
        second = start_up(data_dir, path, tmp_path / "second.log")
        wait_until(lambda: len({r.header("webhook-id") for r in sink.requests}) >= 24, 60)
        repeats = assert_in_order(sink)
        second.stop()
    fault_report.append(
        f"ordered by transid, relay up tree SIGKILLed and restarted: {KEYS * RECEIPTS} "
        f"accepted, {sent_before} sent before the kill, all delivered in order per key, "
        f"{repeats} repeated"
    )


def test_order_survives_the_embedded_redis_killed(tmp_path, start_up, fault_report):
    with HttpSink(Answer(200, delay=1.0)) as sink:
        up = start_up(tmp_path / "var", rules(tmp_path, sink), tmp_path / "up.log")
        post_receipts(up.url())
        wait_until(lambda: len(sink.requests) >= KEYS * 2, 30, 0.05)
        time.sleep(1.2)  # past one append-only fsync
        sent_before = len(sink.requests)
        os.kill(up.redis_server_pid(), signal.SIGKILL)
        wait_until(lambda: "redis died; restarting it" in up.output(), 15)
        wait_until(lambda: len({r.header("webhook-id") for r in sink.requests}) >= 24, 60)
        repeats = assert_in_order(sink)
    fault_report.append(
        f"ordered by transid, embedded Redis SIGKILLed under relay up: {KEYS * RECEIPTS} "
        f"accepted, {sent_before} sent before the kill, all delivered in order per key, "
        f"{repeats} repeated"
    )
