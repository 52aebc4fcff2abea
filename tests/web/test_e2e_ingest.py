"""End to end: POST → 200 → a real Celery worker has recorded the event in Redis."""

from __future__ import annotations

import pytest

from relay.web.app import create_app
from tests.conftest import load_fixture
from tests.harness import FIXTURES, wait_until

pytestmark = pytest.mark.e2e
URL = "/webhooks/webex-connect"


@pytest.fixture
def client(worker_settings):
    return create_app(worker_settings).test_client()


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.json")))
def test_accepted_event_is_recorded_by_the_worker(client, worker_store, name):
    payload = load_fixture(name)
    answer = client.post(URL + "/svc-1", json=payload)
    assert answer.status_code == 200
    (event_id,) = answer.json["accepted"]
    event = wait_until(lambda: worker_store.event(event_id))
    assert event["id"] == event_id
    assert event["source"] == "svc-1"
    assert event["raw"] == payload
    steps = wait_until(lambda: [entry["step"] for entry in worker_store.history(event_id)])
    assert steps[:2] == ["received", "routed"]
    reference = event.get("transid") or event.get("tid")
    assert event_id in worker_store.find(reference)


def test_events_of_one_transid_are_found_in_time_order(client, worker_store):
    submitted = client.post(URL, json=load_fixture("receipt-submitted.json")).json
    delivered = client.post(URL, json=load_fixture("receipt-delivered.json")).json
    ids = submitted["accepted"] + delivered["accepted"]
    transid = "7f3af32c-8d6a-4173-b1c8-4805135ada71"
    wait_until(lambda: len(worker_store.find(transid)) == 2)
    assert worker_store.find(transid) == ids


def test_duplicate_is_recorded_once(client, worker_store):
    payload = load_fixture("receipt-clicked.json")
    (event_id,) = client.post(URL, json=payload).json["accepted"]
    assert client.post(URL, json=payload).json == {"accepted": [], "duplicates": 1}
    wait_until(lambda: worker_store.event(event_id))
    assert worker_store.find(payload["deliveryInfoNotification"]["transid"]) == [event_id]
