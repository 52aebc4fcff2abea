"""The admin API (/api/…) on the Flask test client against the suite's real Redis."""

from __future__ import annotations

import json
import time

import pytest

from relay.settings import load_settings
from relay.state import Store
from relay.web.app import create_app
from tests.conftest import load_fixture
from tests.harness import relay_env
from tests.httpsink import closed_port

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(env):
    return create_app(load_settings({**env, "RELAY_ADMIN_TOKEN": TOKEN})).test_client()


def seed(store: Store, event_id: str = "01EVENT", destination: str = "trace") -> dict:
    record = {
        "id": f"{event_id}:{destination}",
        "event": {"id": event_id, "kind": "inbound_message", "received_at": "2024-01-01T00:00Z"},
        "route": "inbound",
        "destination": destination,
        "rules_version": "v1",
        "retry": {"attempts": 3, "initial": 0.1, "max": 0.2},
        "reason": "HTTP 400",
        "dead_at": "2024-01-01T00:00:01.000Z",
        "attempts": [{"attempt": 1, "outcome": "permanent", "status": 400, "error": "HTTP 400"}],
    }
    store.dead_letters.add(record)
    return record


# -- who may call it ------------------------------------------------------------------------

API_REQUESTS = [
    ("GET", "/api/dead-letters"),
    ("GET", "/api/dead-letters/01EVENT:trace"),
    ("POST", "/api/dead-letters/01EVENT:trace/replay"),
    ("POST", "/api/dead-letters/replay"),
    ("DELETE", "/api/dead-letters"),
    ("DELETE", "/api/dead-letters/01EVENT:trace"),
    ("GET", "/api/events/01EVENT"),
    ("POST", "/api/rules/test"),
    ("GET", "/api/destinations"),
    ("POST", "/api/destinations/trace/pause"),
    ("POST", "/api/destinations/trace/resume"),
    ("PUT", "/api/dead-letters"),  # no such method
    ("GET", "/api/no-such-thing"),
    ("GET", "/api"),
]


@pytest.mark.parametrize(("method", "path"), API_REQUESTS)
def test_without_a_configured_token_every_api_path_is_404(client, store, method, path):
    seed(store)
    answer = client.open(path, method=method, headers=AUTH, json={"all": True})
    assert answer.status_code == 404
    assert answer.json["error"] == "not_found"
    assert store.dead_letters.ids() == ["01EVENT:trace"]


@pytest.mark.parametrize(("method", "path"), API_REQUESTS)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ünïcode"],
)
def test_without_the_right_bearer_token_the_answer_is_401(api, method, path, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    answer = api.open(path, method=method, headers=headers)
    assert answer.status_code == 401
    assert answer.json == {"error": "unauthorized"}
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_the_scheme_is_case_insensitive(api):
    answer = api.get("/api/dead-letters", headers={"Authorization": f"bearer {TOKEN}"})
    assert answer.status_code == 200


# -- dead letters ---------------------------------------------------------------------------


def test_list_show_and_delete(api, store):
    record = seed(store)
    seed(store, "01OTHER", "crm")
    listed = api.get("/api/dead-letters", headers=AUTH).json
    assert listed["total"] == 2
    assert [item["id"] for item in listed["dead_letters"]] == ["01EVENT:trace", "01OTHER:crm"]
    assert api.get("/api/dead-letters?destination=crm&limit=1", headers=AUTH).json["total"] == 1
    shown = api.get("/api/dead-letters/01EVENT:trace", headers=AUTH)
    assert shown.status_code == 200
    assert shown.json == {**record, "age_seconds": shown.json["age_seconds"]}
    deleted = api.delete("/api/dead-letters/01EVENT:trace", headers=AUTH)
    assert deleted.json == {"deleted": ["01EVENT:trace"]}
    again = api.get("/api/dead-letters/01EVENT:trace", headers=AUTH)
    assert again.status_code == 404 and again.json["error"] == "not_found"
    assert api.delete("/api/dead-letters/01EVENT:trace", headers=AUTH).status_code == 404


def test_replay_one_publishes_a_delivery_and_removes_the_dead_letter(api, store, redis_client):
    record = seed(store)
    answer = api.post(f"/api/dead-letters/{record['id']}/replay", headers=AUTH)
    assert answer.status_code == 202
    assert answer.json["replayed"] == [
        {"id": record["id"], "destination": "trace", "task": "relay.deliver", "generation": 1}
    ]
    assert answer.json["warnings"] == []
    assert redis_client.llen("relay.deliver") == 1
    assert store.dead_letters.ids() == []
    missing = api.post(f"/api/dead-letters/{record['id']}/replay", headers=AUTH)
    assert missing.status_code == 404


def test_replay_by_ids_or_all_of_a_destination(api, store, redis_client):
    seed(store, "01A", "trace")
    seed(store, "01B", "crm")
    seed(store, "01C", "trace")
    body = {"all": True, "destination": "trace"}
    answer = api.post("/api/dead-letters/replay", headers=AUTH, json=body)
    assert answer.status_code == 202
    assert [item["id"] for item in answer.json["replayed"]] == ["01A:trace", "01C:trace"]
    answer = api.post("/api/dead-letters/replay", headers=AUTH, json={"ids": ["01B:crm", "x:y"]})
    assert [item["id"] for item in answer.json["replayed"]] == ["01B:crm"]
    assert answer.json["not_found"] == ["x:y"]
    assert answer.json["warnings"] == [
        "01B:crm: destination 'crm' is not in the current rules; the worker will dead-letter"
        " it again"
    ]
    assert redis_client.llen("relay.deliver") == 3


def test_purge_older_than_keeps_young_ones(api, store):
    seed(store, "01OLD")
    seed(store, "01NEW")
    store.client.zadd("relay:dead", {"01OLD:trace": time.time() - 8 * 86400})
    answer = api.delete("/api/dead-letters?older_than=7d", headers=AUTH)
    assert answer.json == {"purged": 1}
    assert store.dead_letters.ids() == ["01NEW:trace"]
    assert api.delete("/api/dead-letters", headers=AUTH).json == {"purged": 1}


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("DELETE", "/api/dead-letters?older_than=soon", None, "older_than"),
        ("DELETE", "/api/dead-letters?older_than=-1d", None, "older_than"),
        ("DELETE", "/api/dead-letters?olderthan=7d", None, "olderthan"),
        ("DELETE", "/api/dead-letters?older_than=1d&older_than=2d", None, "older_than"),
        ("GET", "/api/dead-letters?limit=0", None, "limit"),
        ("GET", "/api/dead-letters?limit=ten", None, "limit"),
        ("GET", "/api/dead-letters?page=2", None, "page"),
        ("POST", "/api/dead-letters/replay", {}, "ids"),
        ("POST", "/api/dead-letters/replay", [], "body"),
        ("POST", "/api/dead-letters/replay", "x", "body"),
        ("POST", "/api/dead-letters/replay", {"ids": []}, "ids"),
        ("POST", "/api/dead-letters/replay", {"ids": "01A:trace"}, "ids"),
        ("POST", "/api/dead-letters/replay", {"ids": ["a", 7]}, "ids[1]"),
        ("POST", "/api/dead-letters/replay", {"ids": ["a"] * 1001}, "ids"),
        ("POST", "/api/dead-letters/replay", {"all": "yes"}, "all"),
        ("POST", "/api/dead-letters/replay", {"all": False}, "all"),
        ("POST", "/api/dead-letters/replay", {"all": True, "ids": ["a"]}, "ids"),
        ("POST", "/api/dead-letters/replay", {"all": True, "destination": 3}, "destination"),
        ("POST", "/api/dead-letters/replay", {"ids": ["a"], "destination": "x"}, "destination"),
        ("POST", "/api/dead-letters/replay", {"al": True}, "al"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, store, method, path, body, field):
    seed(store)
    answer = api.open(path, method=method, headers=AUTH, json=body)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"] == "invalid_request"
    assert answer.json["field"] == field
    assert store.dead_letters.ids() == ["01EVENT:trace"]


@pytest.mark.parametrize(
    "body", [b"", b" ", b"{", b"NaN", b'{"ids": [NaN]}', b"\xff\xfe", b"[" * 60000]
)
def test_malformed_bodies_are_400s(api, body):
    answer = api.post(
        "/api/dead-letters/replay", headers=AUTH, data=body, content_type="application/json"
    )
    assert answer.status_code == 400, answer.json
    assert answer.json["field"] == "body"


def test_an_id_no_redis_key_can_hold_is_simply_not_found(api):
    body = b'{"ids": ["\\ud800"]}'
    answer = api.post(
        "/api/dead-letters/replay", headers=AUTH, data=body, content_type="application/json"
    )
    assert answer.status_code == 202
    assert answer.json["not_found"] == ["\ufffd"]  # read as every body is (relay.text)


def test_a_body_that_is_not_json_is_415(api):
    answer = api.post(
        "/api/dead-letters/replay", headers=AUTH, data="ids=a", content_type="text/plain"
    )
    assert answer.status_code == 415


@pytest.mark.parametrize(
    "path",
    [
        "/api/dead-letters/%00",
        "/api/dead-letters/%ff%fe",
        "/api/dead-letters/" + "x" * 5000,
        "/api/dead-letters/a/b/c:d",
        "/api/events/%ff",
        "/api/events/" + "%2F" * 100,
        "/api/dead-letters/%25/replay",
    ],
)
def test_odd_ids_are_404s_not_500s(api, path):
    method = "POST" if path.endswith("/replay") else "GET"
    answer = api.open(path, method=method, headers=AUTH)
    assert answer.status_code == 404
    assert answer.is_json


def test_redis_not_answering_is_a_503(redis_server):
    env = relay_env(f"redis://127.0.0.1:{closed_port()}/0", RELAY_ADMIN_TOKEN=TOKEN)
    api = create_app(load_settings(env)).test_client()
    answer = api.get("/api/dead-letters", headers=AUTH)
    assert answer.status_code == 503
    assert answer.json["error"] == "unavailable"
    assert answer.headers["Retry-After"]


# -- history and rules ----------------------------------------------------------------------


def test_event_history_by_transid(api, store):
    event = {"id": "01A", "kind": "delivery_receipt", "status": "Submitted", "transid": "T"}
    store.route(
        {**event, "received_at": "2024-01-01T00:00:00.000Z"},
        [{"step": "received", "rules_version": "v"}, {"step": "unrouted", "rules_version": "v"}],
        jobs=[],
        holds=[],
    )
    answer = api.get("/api/events/T", headers=AUTH)
    assert answer.status_code == 200
    (found,) = answer.json["events"]
    assert answer.json["query"] == "T"
    assert found["id"] == "01A" and found["routing"] == "unrouted"
    assert api.get("/api/events/nothing", headers=AUTH).status_code == 404


def test_rules_test_is_the_dry_run_against_the_running_rules(api):
    payload = load_fixture("receipt-failed-invalid-address.json")
    answer = api.post("/api/rules/test?source=eu", headers=AUTH, json=payload)
    assert answer.status_code == 200, answer.json
    (report,) = answer.json["reports"]
    assert report["routes"] == ["failures"]
    assert report["event"]["source"] == "eu"
    assert {item["destination"] for item in report["deliveries"]} == {"trace", "failures-webhook"}
    assert answer.json["rules_version"]


@pytest.mark.parametrize(
    ("query", "body", "status", "field"),
    [
        ("", {"deliveryInfoNotification": {}}, 400, None),
        ("", b"{", 400, "body"),
        ("?source=bad/source", {}, 400, "source"),
        ("?source=a&source=b", {}, 400, "source"),
        ("?src=x", {}, 400, "src"),
    ],
)
def test_rules_test_rejects_what_it_cannot_understand(api, query, body, status, field):
    data = body if isinstance(body, bytes) else json.dumps(body)
    answer = api.post(
        "/api/rules/test" + query, headers=AUTH, data=data, content_type="application/json"
    )
    assert answer.status_code == status, answer.json
    if field:
        assert answer.json["field"] == field


# -- refusals: one JSON shape, from the app's one error handler ---------------------------

VIEWER = "s3cret-viewer-token"


def test_every_refusal_is_the_json_of_the_one_error_handler(env, store):
    settings = load_settings({**env, "RELAY_ADMIN_TOKEN": TOKEN, "RELAY_VIEWER_TOKEN": VIEWER})
    api = create_app(settings).test_client()
    refused = api.post(
        "/api/destinations/trace/pause", headers={"Authorization": f"Bearer {VIEWER}"}
    )
    assert refused.status_code == 403
    assert refused.json == {
        "error": "forbidden",
        "detail": "RELAY_VIEWER_TOKEN is read-only: GET only; this needs RELAY_ADMIN_TOKEN",
    }
    missing = [
        ("GET", "/api/dead-letters/01NONE:trace", "no dead letter '01NONE:trace'"),
        ("DELETE", "/api/dead-letters/01NONE:trace", "no dead letter '01NONE:trace'"),
        ("POST", "/api/dead-letters/01NONE:trace/replay", "no dead letter '01NONE:trace'"),
        ("GET", "/api/events/01NONE", "no event with id, transid or tid '01NONE'"),
        (
            "POST",
            "/api/events/01NONE/reroute",
            "no event '01NONE' (history is kept RELAY_HISTORY_TTL)",
        ),
        ("POST", "/api/destinations/nope/resume", "no destination 'nope' in the rules"),
    ]
    for method, path, detail in missing:
        answer = api.open(path, method=method, headers=AUTH)
        assert (answer.status_code, answer.json) == (404, {"error": "not_found", "detail": detail})
        assert answer.mimetype == "application/json"
    for path, field in [
        ("/api/dead-letters?cursor=bogus", "cursor"),
        ("/api/events?state=x", "state"),
    ]:
        answer = api.get(path, headers=AUTH)
        assert answer.status_code == 400, path
        assert (answer.json["error"], answer.json["field"]) == ("invalid_request", field)
