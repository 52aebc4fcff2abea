"""The webhook endpoint against the suite's real Redis."""

from __future__ import annotations

import json
import threading

import pytest

from relay.web.app import create_app
from tests.conftest import load_fixture
from tests.harness import FIXTURES

URL = "/webhooks/webex-connect"
ALL_FIXTURES = sorted(path.name for path in FIXTURES.glob("*.json"))


def post(client, body, path=URL, content_type="application/json", **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type, **kwargs)


def inbox_length(redis_client) -> int:
    return redis_client.llen("relay:inbox")


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_documented_payload_is_accepted(client, name):
    answer = post(client, load_fixture(name))
    assert answer.status_code == 200, answer.json
    assert len(answer.json["accepted"]) == 1
    assert answer.json["duplicates"] == 0


def test_array_of_notifications_is_accepted_as_one_event_each(client):
    body = [load_fixture("receipt-delivered.json"), load_fixture("inbound-sms.json")]
    answer = post(client, body, path=URL + "/eu-service")
    assert answer.status_code == 200
    assert len(set(answer.json["accepted"])) == 2


def seed_receipts(count: int) -> list[dict]:
    """``count`` copies of the seed receipt, each with a transid of its own."""
    seed = load_fixture("receipt-delivered.json")
    return [
        {"deliveryInfoNotification": {**seed["deliveryInfoNotification"], "transid": f"t-{n}"}}
        for n in range(count)
    ]


def test_the_documented_batch_of_1000_receipts_fits_the_default_body_limit(client):
    body = json.dumps(seed_receipts(1000), indent=2)  # as pretty-printed as the fixture
    answer = post(client, body)
    assert answer.status_code == 200, answer.json
    assert len(set(answer.json["accepted"])) == 1000


def test_a_batch_of_1001_is_400_naming_the_field(client, redis_client):
    answer = post(client, json.dumps(seed_receipts(1001), indent=2))
    assert answer.status_code == 400
    assert answer.json["field"] == "body" and "1000" in answer.json["detail"]
    assert inbox_length(redis_client) == 0


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", [URL, URL + "/marketing"])
def test_url_check_answers_200(client, method, path):
    assert client.open(path, method=method).status_code == 200


def test_missing_content_type_is_parsed_as_json(client):
    answer = client.post(URL, data=json.dumps(load_fixture("receipt-delivered.json")))
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b"[]", "body"),
        (b"42", "body"),
        (b'{"hello": "world"}', "body"),
        (b'{"x": NaN}', "body"),
        (b"\xff\xfe{}", "body"),
        (b"[" * 30_000 + b"]" * 30_000, "body"),
        (b'{"deliveryInfoNotification": {}}', "deliveryInfoNotification.deliveryInfo"),
        (b'{"deliveryInfoNotification": "x"}', "deliveryInfoNotification"),
        (b'[{"DELIVERYINFONOTIFICATION": null}]', "[0].deliveryInfoNotification"),
        (
            b'{"deliveryInfoNotification": {"deliveryInfo": {"code": "7500"}}}',
            "deliveryInfoNotification.deliveryInfo.deliveryStatus",
        ),
        (
            b'{"deliveryInfoNotification": {"deliveryInfo": {"deliveryStatus": ""}}}',
            "deliveryInfoNotification.deliveryInfo.deliveryStatus",
        ),
        (
            b'{"deliveryInfoNotification": {"deliveryInfo": {"deliveryStatus": "Delivered",'
            b' "code": {"a": 1}}}}',
            "deliveryInfoNotification.deliveryInfo.code",
        ),
        (b'{"oa": "4411", "message": "hi"}', "da"),
        (b'{"oa": "4411", "da": "123"}', "message"),
        (b'{"oa": ["4411"], "da": "123", "message": "hi"}', "oa"),
        (b'[{"oa": "1", "da": "2", "message": "ok"}, {"oa": "1", "da": "2"}]', "[1].message"),
        (b'[{"oa": "1", "da": "2", "message": "ok"}, 7]', "[1]"),
    ],
)
def test_bad_payload_is_400_naming_the_field(client, redis_client, body, field):
    answer = post(client, body)
    assert answer.status_code == 400, answer.data[:200]
    assert answer.json["error"] == "invalid_payload"
    assert answer.json["field"] == field
    assert answer.json["detail"].startswith(field)
    assert inbox_length(redis_client) == 0


def test_a_batch_with_one_bad_item_enqueues_nothing(client, redis_client):
    body = [load_fixture("receipt-delivered.json"), {"oa": "1"}]
    assert post(client, body).status_code == 400
    assert inbox_length(redis_client) == 0
    assert post(client, body[:1]).json["duplicates"] == 0


def test_body_over_the_limit_is_413(redis_server):
    from relay.settings import load_settings
    from tests.harness import relay_env

    settings = load_settings(relay_env(redis_server.url, RELAY_MAX_BODY_BYTES="1024"))
    client = create_app(settings).test_client()
    big = {"oa": "1", "da": "2", "message": "x" * 2000}
    answer = post(client, big)
    assert answer.status_code == 413
    assert answer.json["error"] == "payload_too_large"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/html",
    ],
)
def test_non_json_content_type_is_415(client, content_type):
    answer = post(client, load_fixture("receipt-delivered.json"), content_type=content_type)
    assert answer.status_code == 415
    assert answer.json["error"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/vnd.webex+json", "text/json"]
)
def test_json_content_types_are_accepted(client, content_type):
    answer = post(client, load_fixture("receipt-delivered.json"), content_type=content_type)
    assert answer.status_code == 200


def test_bad_source_label_is_400(client):
    answer = post(client, load_fixture("inbound-sms.json"), path=URL + "/bad%20source")
    assert answer.status_code == 400
    assert answer.json["field"] == "source"


def test_identical_notification_is_answered_200_and_enqueued_once(client, redis_client):
    payload = load_fixture("receipt-delivered.json")
    first = post(client, payload)
    reordered = json.dumps(dict(reversed(list(payload.items()))), indent=4)
    second = post(client, reordered)
    assert first.json["duplicates"] == 0 and len(first.json["accepted"]) == 1
    assert second.status_code == 200
    assert second.json == {"accepted": [], "duplicates": 1}
    assert inbox_length(redis_client) == 1


def test_dedupe_ignores_the_source_label_the_first_copy_keeps_its_own(client, redis_client):
    payload = load_fixture("receipt-delivered.json")
    (event_id,) = post(client, payload, path=URL + "/a").json["accepted"]
    assert post(client, payload, path=URL + "/b").json == {"accepted": [], "duplicates": 1}
    (task,) = redis_client.hvals("relay:pending:tasks")
    (event,) = json.loads(task)["args"]
    assert (event["id"], event["source"]) == (event_id, "a")


def test_duplicates_within_one_batch_are_counted(client, redis_client):
    payload = load_fixture("receipt-submitted.json")
    answer = post(client, [payload, payload, load_fixture("receipt-delivered.json")])
    assert len(answer.json["accepted"]) == 2 and answer.json["duplicates"] == 1
    assert inbox_length(redis_client) == 2


def test_a_different_notification_is_not_a_duplicate(client, redis_client):
    payload = load_fixture("inbound-sms.json")
    post(client, payload)
    answer = post(client, {**payload, "message": "Another text"})
    assert answer.json["duplicates"] == 0
    assert inbox_length(redis_client) == 2


def test_concurrent_copies_on_two_web_apps_are_enqueued_once(settings, redis_client):
    """Two apps stand for two web processes: each has its own Redis and broker clients."""
    clients = [create_app(settings).test_client() for _ in range(2)]
    payload = json.dumps(load_fixture("receipt-failed-invalid-sender.json"))
    barrier = threading.Barrier(16)
    answers = []

    def send(index):
        barrier.wait()
        answers.append(post(clients[index % 2], payload))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200] * 16
    assert sum(len(a.json["accepted"]) for a in answers) == 1
    assert sum(a.json["duplicates"] for a in answers) == 15
    assert inbox_length(redis_client) == 1


def test_healthz_needs_nothing(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_reports_redis_and_broker(client):
    answer = client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json["checks"] == {"redis": "ok", "broker": "ok", "rules": "ok"}
    assert len(answer.json["rules_version"]) == 12


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("POST", "/healthz", 405), ("DELETE", URL, 405)],
)
def test_other_requests_get_json_errors(client, method, path, status):
    answer = client.open(path, method=method)
    assert answer.status_code == status
    assert "error" in answer.json
