"""The worker's metrics endpoint: on loopback unless RELAY_WORKER_METRICS_HOST says otherwise;
the gauges a scrape reads from Redis."""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from relay import metrics
from relay.cli.embedded import free_port
from relay.settings import load_settings
from relay.state import Store, connect


def test_worker_metrics_host_defaults_to_loopback():
    assert load_settings({}).worker_metrics_host == "127.0.0.1"
    chosen = load_settings({"RELAY_WORKER_METRICS_HOST": "0.0.0.0"})
    assert chosen.worker_metrics_host == "0.0.0.0"


@pytest.mark.parametrize(("given", "bound"), [({}, "127.0.0.1"), ({"host": "0.0.0.0"}, "0.0.0.0")])
def test_the_endpoint_binds_where_it_is_told(given, bound):
    port = free_port()
    server = metrics.serve(port, **given)
    try:
        assert server.server_address == (bound, port)
        answer = requests.get(f"http://127.0.0.1:{port}/nothing-here", timeout=5)
        assert answer.status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def scraped(store: Store) -> dict[str, float]:
    """{sample name: value} of the unlabelled samples of a scrape."""
    text = metrics.render(store)[0].decode()
    families = text_string_to_metric_families(text)
    return {s.name: s.value for family in families for s in family.samples if not s.labels}


def test_the_scrape_reports_the_live_worker_nodes_and_the_freshest_heartbeat(redis_server):
    def node(name: str) -> Store:
        return Store(connect(redis_server.url), 3600, 3600, node=name)

    before = scraped(node("web"))
    assert before["relay_worker_nodes"] == 0
    assert "relay_worker_heartbeat_age_seconds" not in before  # no worker ever beat
    node("w1").pending.heartbeat(now=time.time() - 5)
    node("w2").pending.heartbeat(now=time.time() - 60)  # silent past NODE_TTL: dead
    after = scraped(node("web"))
    assert after["relay_worker_nodes"] == 1
    assert 5 <= after["relay_worker_heartbeat_age_seconds"] < 60
