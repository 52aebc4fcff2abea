"""Every metric the alert rules and the dashboard name is one relay exports: scraped from a
real web process (gunicorn) and a real Celery worker on its metrics port, after traffic
that makes every labelled series exist (a receipt delivered after a retry, a dead letter
that opens a circuit, relay's alerts sent and dropped, a paused destination, an unrouted
event, a duplicate, a refused request)."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from relay.cli.embedded import free_port
from tests.conftest import load_fixture
from tests.deploy.files import named_metrics
from tests.harness import WorkerProcess, fresh_db_url, relay_command, relay_env, web_process
from tests.httpsink import Answer, HttpSink

WEBHOOK = "/webhooks/webex-connect"

RULES = """
version: 1
destinations:
  hook: {{type: http, url: "{sink}/hook", retry: {{attempts: 3, initial: 100ms, max: 100ms}}}}
  gone:
    type: http
    url: "{sink}/gone"
    retry: {{attempts: 1}}
    circuit_breaker: {{failures: 1, cooldown: 1h}}
  quiet: {{type: log}}
  alarm-log: {{type: log}}
  alarm-down: {{type: http, url: "http://127.0.0.1:{closed}/alarm", timeout: 1s}}
routes:
  - {{name: bad, match: {{keyword: BAD}}, to: [gone]}}
  - {{name: hush, match: {{keyword: QUIET}}, to: [quiet]}}
  - {{name: receipts, match: {{kind: delivery_receipt}}, to: [hook]}}
notifications:
  - name: ops
    on: [dead_letter, circuit_open]
    group_wait: 1s
    group_interval: 1s
    to: [alarm-log, alarm-down]
"""


def sample_names(url: str) -> set[str]:
    text = requests.get(url, timeout=5).text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def inbound(message: str) -> dict:
    return {**load_fixture("inbound-sms.json"), "message": message, "tid": str(uuid.uuid4())}


@pytest.fixture
def sink():
    """/hook fails each delivery's first attempt (503), then takes it; /gone always 503."""
    with HttpSink() as server:
        server.fail_first_attempts()
        server.respond = lambda request: Answer(503 if request.path == "/gone" else 200)
        yield server


def send_traffic(web: str) -> None:
    """A delivery receipt (to hook: a retry, then delivered), an event to gone (a dead
    letter, its circuit open, relay's alerts), one to the paused quiet, one unrouted, a
    duplicate and a request refused."""

    def post(payload: dict) -> int:
        return requests.post(web + WEBHOOK, json=payload, timeout=5).status_code

    assert post(load_fixture("receipt-delivered.json")) == 200
    for message in ("BAD news", "QUIET please", "nobody routes this"):
        assert post(inbound(message)) == 200
    again = inbound("twice")
    assert post(again) == 200 and post(again) == 200
    assert requests.post(web + WEBHOOK, data=b"{", timeout=5).status_code in (400, 415)


def scrape_until(scrapes: tuple[str, ...], wanted: set[str], timeout: float) -> set[str]:
    """The series names of the scrapes together, once they hold ``wanted`` (or at the
    timeout): the worker settles, alerts and notifies on its own time."""
    deadline = time.monotonic() + timeout
    while True:
        exported = set().union(*(sample_names(scrape) for scrape in scrapes))
        if wanted <= exported or time.monotonic() > deadline:
            return exported
        time.sleep(0.5)


@pytest.mark.e2e
def test_every_metric_the_rules_and_the_dashboard_name_is_exported(redis_server, sink, tmp_path):
    url = fresh_db_url(redis_server)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(sink=sink.url("").rstrip("/"), closed=free_port()))
    metrics_port = free_port()
    env = relay_env(url, RELAY_RULES=str(rules), RELAY_WORKER_METRICS_PORT=str(metrics_port))
    named = named_metrics()
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        assert relay_command(env, "destinations", "pause", "quiet").returncode == 0
        with web_process(url, tmp_path / "web.log", RELAY_RULES=str(rules)) as port:
            web = f"http://127.0.0.1:{port}"
            send_traffic(web)
            scrapes = (web + "/metrics", f"http://127.0.0.1:{metrics_port}/metrics")
            exported = scrape_until(scrapes, named, 30)
    finally:
        worker.stop()
    assert len(named) >= 25
    assert named - exported == set(), "named by deploy/ but not exported"
