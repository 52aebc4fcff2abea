"""RELAY_MAX_EVENT_AGE: a notification older than that by its own time is refused (400).

Off by default (the vendor's sample payloads are from 2015-2024 and are accepted). On, a
signed receipt or message captured and posted again later is refused, as is one whose time
is missing or unreadable (a replay could otherwise pass by leaving it out).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from relay.settings import load_settings
from relay.web.app import create_app
from relay.web.ingest import RECEIPT_TIME
from tests.conftest import load_fixture
from tests.harness import relay_env

URL = "/webhooks/webex-connect"


@pytest.fixture
def guarded(redis_server):
    env = relay_env(redis_server.url, RELAY_MAX_EVENT_AGE="5m")
    return create_app(load_settings(env)).test_client()


def ago(**delta: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(**delta)


def receipt(when: object) -> dict:
    body = copy.deepcopy(load_fixture("receipt-delivered.json"))
    body["deliveryInfoNotification"]["deliveryInfo"]["timeStamp"] = when
    return body


def message(**times: object) -> dict:
    body = load_fixture("inbound-sms.json")
    body.pop("datetime"), body.pop("ts")
    return {**body, **times}


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_guard_is_off_by_default(client):
    assert client.post(URL, json=receipt("2015-04-12T13:00:19.456Z")).status_code == 200


# bodies are made when the test runs (lambdas), not when it is collected: times are relative
@pytest.mark.parametrize(
    "body",
    [
        lambda: receipt(iso(ago(minutes=1))),
        lambda: receipt(ago(minutes=4).astimezone(timezone(timedelta(hours=1))).isoformat()),
        lambda: receipt(iso(ago(minutes=-2))),  # a sender's clock a little ahead
        lambda: message(datetime=iso(ago(seconds=10))),
        lambda: message(ts=iso(ago(seconds=10))),
        lambda: message(ts=int(ago(seconds=10).timestamp() * 1000)),  # Unix milliseconds
        lambda: message(timeStamp=iso(ago(seconds=10))),  # the alias of datetime
    ],
    ids=["receipt", "receipt +01:00", "clock ahead", "datetime", "ts", "ts ms", "timeStamp"],
)
def test_recent_notifications_are_accepted(guarded, body):
    answer = guarded.post(URL, json=body())
    assert answer.status_code == 200, answer.json


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (lambda: receipt(iso(ago(minutes=6))), RECEIPT_TIME),
        (lambda: receipt("2022-10-10T13:53:13.749+01:00"), RECEIPT_TIME),
        (lambda: message(datetime=iso(ago(hours=1))), "datetime"),
        (lambda: message(datetime=iso(ago(hours=1)), ts=iso(ago(seconds=1))), "datetime"),
        (lambda: message(ts=iso(ago(days=2))), "ts"),
        (lambda: message(ts=int(ago(days=2).timestamp())), "ts"),
    ],
    ids=["receipt", "receipt 2022", "datetime", "datetime before ts", "ts", "ts seconds"],
)
def test_an_old_notification_is_400_naming_its_time_field(guarded, redis_client, body, field):
    answer = guarded.post(URL, json=body())
    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_payload"
    assert answer.json["field"] == field
    assert answer.json["detail"] == f"{field}: older than RELAY_MAX_EVENT_AGE (5m)"
    assert redis_client.llen("relay:inbox") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (receipt(""), RECEIPT_TIME),
        (receipt("yesterday"), RECEIPT_TIME),
        (message(), "datetime"),
        (message(datetime=""), "datetime"),
    ],
)
def test_a_missing_or_unreadable_time_is_refused_while_the_guard_is_on(guarded, body, field):
    answer = guarded.post(URL, json=body)
    assert answer.status_code == 400
    assert answer.json["field"] == field
    assert "RELAY_MAX_EVENT_AGE" in answer.json["detail"]


def test_one_old_notification_refuses_the_whole_batch(guarded, redis_client):
    batch = [message(datetime=iso(ago(seconds=5))), message(datetime=iso(ago(hours=2)))]
    answer = guarded.post(URL, json=batch)
    assert answer.status_code == 400
    assert answer.json["field"] == "[1].datetime"
    assert redis_client.llen("relay:inbox") == 0
