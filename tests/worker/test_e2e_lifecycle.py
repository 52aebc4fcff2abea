"""Message lifecycle through a running relay (a real worker, its sweeper, a local HTTP
sink): ``receipt_overdue`` events for exactly the messages whose final receipt did not
come in time, each once, routed by the rules; a late final receipt marked late; each
deadline fired once when a worker is SIGKILLed while they are due, and after a
``relay up`` restart between the receipt and the deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema_rs
import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from relay.cli.embedded import free_port
from relay.settings import load_settings
from relay.state import Store, connect, keys
from relay.state.lifecycle import Lifecycle
from relay.state.pending import NODE_TTL
from relay.web.app import create_app
from relay.web.openapi import openapi
from tests.conftest import load_fixture
from tests.harness import (
    ROOT,
    WorkerProcess,
    fresh_db_url,
    relay_command,
    relay_env,
    wait_until,
)
from tests.httpsink import HttpSink

pytestmark = pytest.mark.e2e

TOKEN = "lifecycle-admin-token"

RULES = """
version: 1
lifecycle:
  final_receipt_within: {within}
destinations:
  overdue: {{type: http, url: "{url}"}}
  trace: {{type: log}}
routes:
  - name: stuck
    match: {{kind: receipt_overdue}}
    to: [overdue]
default: {{to: [trace]}}
"""


def receipt(transid: str, status: str, code: str, at: str) -> dict:
    payload = load_fixture("receipt-submitted.json")
    payload["deliveryInfoNotification"]["transid"] = transid
    info = payload["deliveryInfoNotification"]["deliveryInfo"]
    info.update(deliveryStatus=status, code=code, destination="447700900123", timeStamp=at)
    payload["deliveryInfoNotification"]["callbackData"] = f"order={transid}"
    return payload


def submitted(transid: str) -> dict:
    return receipt(transid, "Submitted", "7501", "2026-12-01T10:00:00.000+01:00")


def delivered(transid: str) -> dict:  # 42 s later by the receipts' own time
    return receipt(transid, "Delivered", "7500", "2026-12-01T10:00:42.000+01:00")


def scrape(port: int) -> dict[tuple, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def overdue_transids(sink: HttpSink) -> list[str]:
    return [request.json()["transid"] for request in sink.requests]


def no_deadline_left(client: redis.Redis) -> bool:
    claimed = list(client.scan_iter(keys.lifecycle_claimed("*")))
    return Lifecycle(client).due_count() == 0 and not claimed


def test_overdue_events_fire_once_for_exactly_the_messages_without_a_final_receipt(
    start_relay,
):
    port = free_port()
    with HttpSink() as sink:
        rules = RULES.format(within="3s", url=sink.url("/overdue"))
        relay = start_relay(rules, RELAY_WORKER_METRICS_PORT=str(port), RELAY_ADMIN_TOKEN=TOKEN)
        transids = [f"life-{i}" for i in range(10)]
        began = time.monotonic()
        for transid in transids:
            relay.post(submitted(transid))
        for transid in transids[:5]:
            relay.post(delivered(transid))
        fired = sink.wait_for(5, timeout=10)
        assert sorted(overdue_transids(sink)) == transids[5:]
        overdue_ids = {r.json()["transid"]: r.json()["id"] for r in fired}
        for request in fired:
            assert 3.0 <= request.at - began <= 8.0, request.at - began
        wait_until(lambda: no_deadline_left(relay.store.client), 5)
        assert len(sink.requests) == 5  # nothing is left that could fire again
        event = fired[0].json()
        assert event["kind"] == "receipt_overdue"
        assert event["last_status"] == "Submitted" and event["last_code"] == "7501"
        assert event["destination"] == "447700900123"
        assert event["callback"] == {"order": event["transid"]}
        assert event["age_seconds"] >= 3
        assert event["first_received_at"].endswith("Z")

        late = relay.post(delivered("life-7"))
        wait_until(lambda: relay.store.lifecycle.message("life-7").state == "late", 10)
        wait_until(lambda: relay.store.event(late), 10)
        assert relay.store.lifecycle.message("life-2").state == "final"
        late_ = ("relay_messages_late_total", ())
        metrics = wait_until(lambda: (found := scrape(port)).get(late_) and found, 10)
    submitted_ = ("relay_receipts_total", (("code", "7501"), ("status", "Submitted")))
    delivered_ = ("relay_receipts_total", (("code", "7500"), ("status", "Delivered")))
    assert (metrics[submitted_], metrics[delivered_]) == (10, 6)
    assert metrics[("relay_messages_overdue_total", ())] == 5
    assert metrics[late_] == 1
    shown = relay_command(relay.env, "events", "show", "life-7")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("message life-7: late\n")
    lines = shown.stdout.split("\n\n")[0].splitlines()
    assert "Submitted 7501" in lines[1] and "Delivered 7500" in lines[2]
    assert lines[3:] == [
        "  time to final: 42s",
        f"  overdue: receipt_overdue {overdue_ids['life-7']}, then its final receipt came late",
    ]
    in_time = relay_command(relay.env, "events", "show", "life-2", "--json")
    life = json.loads(in_time.stdout)["lifecycle"]
    assert (life["state"], life["time_to_final"], life["overdue"]) == ("final", 42.0, None)
    assert [r["status"] for r in life["receipts"]] == ["Submitted", "Delivered"]
    answer = relay.client.get("/api/events/life-7", headers={"Authorization": f"Bearer {TOKEN}"})
    described = openapi()["paths"]["/api/events/{ref}"]["get"]["responses"]["200"]
    lifecycle = described["content"]["application/json"]["schema"]["properties"]["lifecycle"]
    jsonschema_rs.validate(lifecycle, answer.json["lifecycle"])
    assert answer.json["lifecycle"]["state"] == "late"
    assert answer.json["lifecycle"]["overdue"] == overdue_ids["life-7"]
    assert metrics[("relay_message_final_seconds_count", ())] == 6  # 5 in time, 1 late
    assert metrics[("relay_message_final_seconds_sum", ())] == pytest.approx(6 * 42.0)
    log = relay.worker.log_path.read_text()
    assert "447700900123" not in log  # the destination is masked in the log
    assert "no final receipt in" in log


def test_each_deadline_fires_once_when_a_worker_is_killed_while_they_are_due(
    redis_server, tmp_path
):
    url = fresh_db_url(redis_server)
    with HttpSink() as sink:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(within="2s", url=sink.url("/overdue")))
        env = relay_env(url, RELAY_RULES=str(rules))
        first = WorkerProcess(env, tmp_path / "first.log").start()
        second = WorkerProcess(env, tmp_path / "second.log").start()
        store = Store(connect(url), 3600, 3600, node="doomed")
        try:
            web = create_app(load_settings(env)).test_client()
            transids = [f"kill-{i}" for i in range(20)]
            for transid in transids:
                answer = web.post("/webhooks/webex-connect", json=submitted(transid))
                assert answer.status_code == 200
            due = time.time() + 3.0  # past each one's second (2 s after its receipt)
            wait_until(lambda: store.lifecycle.due_count() == 20, 10)
            # a node that claims 5 of them and dies before firing them
            assert len(store.lifecycle.claim_due(due, limit=5)) == 5
            store.client.zadd(keys.NODES, {"doomed": time.time() - NODE_TTL - 1})
            wait_until(lambda: time.time() >= due, 5)
            first.stop(signal.SIGKILL)  # while the others are due: claimed by it, or not
            sink.wait_for(20, timeout=2 * NODE_TTL + 10)
            wait_until(lambda: no_deadline_left(store.client), 10)
            assert sorted(overdue_transids(sink)) == sorted(transids)
        finally:
            second.stop()
            first.stop(signal.SIGKILL)
            store.client.close()


class Up:
    """``relay up --rules FILE`` with its embedded Redis in ``data_dir``, as a user runs it."""

    def __init__(self, data_dir: Path, rules: Path, log: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "OTEL_"))}
        env["RELAY_DATA_DIR"] = str(data_dir)
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        offset = log.stat().st_size
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "up", "--rules", str(rules)]
            + ["--port", str(self.port)],
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        started = lambda: "is up" in log.read_text()[offset:] or self.process.poll() is not None  # noqa: E731
        wait_until(started, 60)
        assert self.process.poll() is None, log.read_text()

    def redis(self) -> redis.Redis:
        url = (self.data_dir / "redis.url").read_text().strip()
        return redis.Redis.from_url(url, decode_responses=True)

    def post(self, payload: dict) -> None:
        url = f"http://127.0.0.1:{self.port}/webhooks/webex-connect"
        answer = requests.post(url, json=payload, timeout=5)
        assert answer.status_code == 200, answer.text

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C would: relay up stops web, worker and Redis, then exits 0."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._out.close()
        assert code == 0


def test_a_relay_up_restart_between_receipt_and_deadline_still_fires(tmp_path):
    with HttpSink() as sink:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(within="12s", url=sink.url("/overdue")))
        data_dir, log = tmp_path / "var", tmp_path / "up.log"
        first = Up(data_dir, rules, log)
        try:
            posted = time.monotonic()
            first.post(submitted("restart-1"))
            client = first.redis()
            wait_until(lambda: Lifecycle(client).due_count() == 1, 10)
            client.close()
        finally:
            first.stop()
        assert not sink.requests
        second = Up(data_dir, rules, log)
        try:
            (request,) = sink.wait_for(1, timeout=40)
            assert request.json()["transid"] == "restart-1"
            assert request.at - posted >= 12.0
            client = second.redis()
            wait_until(lambda: no_deadline_left(client), 10)
            client.close()
            assert len(sink.requests) == 1
        finally:
            second.stop()
