"""Delivery health for the console (relay.ops.health) from the search indexes and the
hourly counts the workers keep, against the suite's real Redis."""

from __future__ import annotations

import time

import pytest

from relay.ops.health import _percentiles, delivery_health
from relay.state import Store, connect
from tests.state.test_lifecycle import receipt, route


@pytest.fixture
def node_store(redis_server):
    client = connect(redis_server.url)
    yield Store(client, 2 * 86400, 3600, node="node-a")  # history kept two days
    client.close()


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({}, (None, None, 0)),
        ({"le60": 1}, (60, 60, 1)),
        ({"le5": 9, "le3600": 1}, (5, 3600, 10)),
        ({"le1": 50, "le+Inf": 50}, (1, float("inf"), 100)),
    ],
)
def test_percentiles_are_the_upper_bounds_of_their_buckets(counts, expected):
    assert _percentiles(counts) == expected


def test_the_windows_count_final_receipts_codes_overdue_and_late(node_store):
    route(node_store, receipt("h1", "Delivered", "7500"))
    route(node_store, receipt("h2", "Failed", "7102"))
    route(node_store, receipt("h3", "Failed", "7102"))
    route(node_store, receipt("h4", "Un-Delivered", "7203"))
    node_store.lifecycle.count_final(42.0, late=False)
    node_store.lifecycle.count_final(4000.0, late=True)
    node_store.lifecycle.count_final(None, late=True)
    hour = delivery_health(node_store)["1h"]
    assert hour.finals == {"Delivered": 1, "Un-Delivered": 1, "Failed": 2, "Clicked": 0}
    assert hour.rate == pytest.approx(0.25)
    assert hour.top_codes == [("7102", "Invalid address", 2), ("7203", "Unknown subscriber", 1)]
    assert (hour.p50_text, hour.p95_text, hour.timed, hour.late) == ("≤ 1m", "≤ 3h", 2, 2)
    assert hour.overdue == 0
    day = delivery_health(node_store, now=time.time() + 2 * 3600)
    assert day["1h"].finals["Failed"] == 0 and day["24h"].finals["Failed"] == 2
