"""Metrics (web and worker, several processes), structured logs, hot reload of rules."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from relay.cli.embedded import free_port
from tests.conftest import load_fixture
from tests.harness import wait_until
from tests.httpsink import Answer

URL = "/webhooks/webex-connect"


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels…): value} from a Prometheus text scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return out


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, *sorted(labels.items())), 0.0)


def test_web_metrics_count_accepted_duplicate_and_rejected(client):
    before = samples(client.get("/metrics").get_data(as_text=True))
    payload = {**load_fixture("inbound-sms.json"), "message": f"m {time.time_ns()}"}
    assert client.post(URL + "/metrics-src", json=payload).status_code == 200
    assert client.post(URL + "/metrics-src", json=payload).status_code == 200  # duplicate
    assert client.post(URL, data=b"{", content_type="application/json").status_code == 400
    assert client.post(URL, data=b"{}", content_type="text/plain").status_code == 415
    answer = client.get("/metrics")
    assert answer.content_type.startswith("text/plain")
    after = samples(answer.get_data(as_text=True))

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        grew("relay_notifications_received_total", kind="inbound_message", source="metrics-src")
        == 1
    )
    assert grew("relay_notifications_duplicate_total") == 1
    assert grew("relay_notifications_rejected_total", reason="400") == 1
    assert grew("relay_notifications_rejected_total", reason="415") == 1
    assert grew("relay_ingest_duration_seconds_count") == 2
    assert ("relay_dead_letters",) in after and ("relay_pending_tasks",) in after


RULES = """
version: 1
destinations:
  hook: {{type: http, url: "{url}", retry: {{attempts: 2, initial: 100ms, max: 100ms}}}}
  gone: {{type: http, url: "{url}/bad", retry: {{attempts: 1}}}}
routes:
  - {{name: bad, match: {{keyword: BAD}}, to: [gone]}}
  - {{name: all, to: [hook]}}
"""


@pytest.mark.e2e
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_worker_metrics_add_up_across_processes(start_relay, sink, pool):
    port = free_port()
    sink.script(Answer(404))  # for BAD, posted and finished first: deliveries run concurrently
    relay = start_relay(
        RULES.format(url=sink.url("/hook")),
        RELAY_WORKER_POOL=pool,
        RELAY_WORKER_CONCURRENCY="2",
        RELAY_WORKER_METRICS_PORT=str(port),
        RELAY_LOG_FORMAT="json",
    )
    bad = relay.post({**load_fixture("inbound-sms.json"), "message": "BAD"})
    relay.finished(bad)
    ids = [
        relay.post({**load_fixture("inbound-sms.json"), "message": f"hello {i}"}) for i in range(6)
    ]
    for event_id in ids:
        relay.finished(event_id)

    def scrape():
        return samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)

    metrics = wait_until(
        lambda: (
            (s := scrape())
            and value(
                s, "relay_deliveries_total", destination="hook", type="http", outcome="success"
            )
            == 6
            and s
        ),
        10,
    )
    assert value(metrics, "relay_events_routed_total", route="all") == 6
    assert value(metrics, "relay_events_routed_total", route="bad") == 1
    assert (
        value(
            metrics,
            "relay_deliveries_total",
            destination="gone",
            type="http",
            outcome="dead_letter",
        )
        == 1
    )
    assert value(metrics, "relay_end_to_end_seconds_count") == 6
    assert value(metrics, "relay_delivery_duration_seconds_count", destination="hook") == 6
    assert value(metrics, "relay_dead_letters") == 1
    assert value(metrics, "relay_queue_depth", queue="relay.deliver") == 0
    versions = [k for k, v in metrics.items() if k[0] == "relay_rules_info" and v == 1]
    assert len({dict(k[1:])["version"] for k in versions}) == 1
    assert value(metrics, "relay_rules_last_reload_success") == 1
    # structured log lines for the notable steps
    lines = [
        json.loads(line)
        for line in relay.worker.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    steps = {(line.get("step"), line.get("event_id")) for line in lines}
    assert ("routed", ids[0]) in steps and ("success", ids[0]) in steps
    assert ("dead_letter", bad) in steps
    dead = next(line for line in lines if line.get("step") == "dead_letter")
    assert dead["destination"] == "gone" and dead["route"] == "bad" and dead["level"] == "warning"


@pytest.mark.e2e
def test_rules_reload_without_restart_and_bad_file_is_ignored(start_relay, sink, tmp_path):
    port = free_port()
    relay = start_relay(RULES.format(url=sink.url("/hook")), RELAY_WORKER_METRICS_PORT=str(port))
    rules_path = Path(relay.env["RELAY_RULES"])
    text = rules_path.read_text().replace(
        "routes:\n", "routes:\n  - {name: vip, match: {keyword: VIP}, to: [gone]}\n"
    )
    rules_path.write_text(text)
    event_id = None

    def routed_by_vip():
        nonlocal event_id
        event_id = relay.post(
            {**load_fixture("inbound-sms.json"), "message": f"VIP {time.time_ns()}"}
        )
        entries = wait_until(lambda: relay.steps(event_id, "routed"), 5)
        return entries[0]["routes"] == ["vip"]

    wait_until(routed_by_vip, 10, interval=0.5)
    good_version = relay.steps(event_id, "received")[0]["rules_version"]
    rules_path.write_text(text.replace("match:", "mtach:", 1))  # broken
    scrape = f"http://127.0.0.1:{port}/metrics"
    wait_until(
        lambda: (
            value(samples(requests.get(scrape, timeout=5).text), "relay_rules_last_reload_success")
            == 0
        ),
        10,
    )
    later = relay.post({**load_fixture("inbound-sms.json"), "message": "VIP again"})
    entries = wait_until(lambda: relay.steps(later, "received"), 5)
    assert entries[0]["rules_version"] == good_version  # the running rules stayed
    assert "rules reload failed" in relay.worker.log_path.read_text()


@pytest.mark.e2e
def test_sighup_reloads_at_once(start_relay, sink):
    relay = start_relay(RULES.format(url=sink.url("/hook")))
    rules_path = Path(relay.env["RELAY_RULES"])
    rules_path.write_text(
        rules_path.read_text().replace(
            "routes:\n", "routes:\n  - {name: vip, match: {keyword: VIP}, to: [gone]}\n"
        )
    )
    os.kill(relay.worker.pid, signal.SIGHUP)
    # the reload itself, waited for (a fixed pause lost the race on a loaded machine)
    wait_until(lambda: "rules reloaded: version" in relay.worker.log_path.read_text(), 10)
    event_id = relay.post({**load_fixture("inbound-sms.json"), "message": "VIP now"})
    entries = wait_until(lambda: relay.steps(event_id, "routed"), 5)
    assert entries[0]["routes"] == ["vip"]
    assert relay.worker.running()  # reloaded, not restarted


@pytest.mark.e2e
def test_in_flight_delivery_finishes_under_the_rules_that_routed_it(start_relay, sink):
    sink.script(Answer(503, {"Retry-After": "2"}), Answer(200))
    relay = start_relay(RULES.format(url=sink.url("/hook")).replace("attempts: 2", "attempts: 3"))
    event_id = relay.post({**load_fixture("inbound-sms.json"), "message": "in flight"})
    wait_until(lambda: sink.requests, 5)
    rules_path = Path(relay.env["RELAY_RULES"])
    rules_path.write_text(rules_path.read_text().replace(sink.url("/hook"), sink.url("/moved")))
    relay.finished(event_id)
    assert [request.path for request in sink.requests] == ["/hook", "/hook"]
