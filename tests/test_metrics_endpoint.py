"""The worker's metrics endpoint: on loopback unless RELAY_WORKER_METRICS_HOST says otherwise."""

from __future__ import annotations

import pytest
import requests

from relay import metrics
from relay.cli.embedded import free_port
from relay.settings import load_settings


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
