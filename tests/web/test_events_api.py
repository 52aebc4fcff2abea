"""The search, re-route and rules diff endpoints of the admin API, on the Flask test client
against the suite's real Redis; events are routed through the store's real routing call.
(Re-routes delivered by a real worker: tests/worker/test_e2e_reroute.py.)"""

from __future__ import annotations

import time

import pytest

from relay.events import Step, delivery_entry
from relay.settings import load_settings
from relay.state import Store, connect
from relay.web.app import create_app
from tests.harness import ROOT
from tests.ops.test_search import NOW, inbound, receipt, route

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RULES = (ROOT / "config" / "rules.yaml").read_text()


@pytest.fixture
def api(env):
    return create_app(load_settings({**env, "RELAY_ADMIN_TOKEN": TOKEN})).test_client()


@pytest.fixture
def store(redis_server):
    client = connect(redis_server.url)
    yield Store(client, 86400, 3600)
    client.close()


@pytest.fixture
def traffic(store):
    """What config/rules.yaml does with three receipts and an inbound message."""
    failed = receipt(at=NOW - 40)
    undelivered = receipt(status="Un-Delivered", code="7500", source="eu", at=NOW - 30)
    delivered = receipt(status="Delivered", code="0", at=NOW - 20)
    stop = inbound("stop", at=NOW - 10)
    jobs = route(store, failed, ["failures"], ["trace", "failures-webhook"])
    route(store, undelivered, ["failures"], ["trace", "failures-webhook"])
    route(store, delivered, ["default"], ["trace"])
    route(store, stop, ["inbound"], ["trace"])
    for job in jobs:
        store.deliveries.delivered(job, {"attempt": 1}, [delivery_entry(job, Step.DELIVERED)])
    return {"failed": failed, "undelivered": undelivered, "delivered": delivered, "stop": stop}


def listed(api, query: str = "") -> list[str]:
    answer = api.get(f"/api/events?{query}", headers=AUTH)
    assert answer.status_code == 200, answer.json
    return [item["id"] for item in answer.json["events"]]


# -- who may call it ------------------------------------------------------------------------

REQUESTS = [
    ("GET", "/api/events"),
    ("POST", "/api/events/01EVENT/reroute"),
    ("POST", "/api/rules/diff"),
]


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_the_new_endpoints_need_the_admin_token(api, client, method, path):
    assert api.open(path, method=method).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert api.open(path, method=method, headers=wrong).status_code == 401
    assert client.open(path, method=method, headers=AUTH).status_code == 404  # token unset


# -- search ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["stop", "delivered", "undelivered", "failed"]),
        ("kind=delivery_receipt", ["delivered", "undelivered", "failed"]),
        ("status=Un-Delivered", ["undelivered"]),
        ("code=7500", ["undelivered"]),
        ("source=eu", ["undelivered"]),
        ("route=failures", ["undelivered", "failed"]),
        ("destination=failures-webhook", ["undelivered", "failed"]),
        ("state=delivered", ["failed"]),
        ("state=pending", ["stop", "delivered", "undelivered"]),
        ("keyword=STOP", ["stop"]),
        (f"since={NOW - 25:.3f}", ["stop", "delivered"]),
        (f"until={NOW - 25:.3f}", ["undelivered", "failed"]),
        ("since=1h&kind=inbound_message", ["stop"]),
        ("route=failures&state=pending&code=7500", ["undelivered"]),
        ("kind=&status=&state=", ["stop", "delivered", "undelivered", "failed"]),  # empty: none
    ],
)
def test_search_filters(api, traffic, query, expected):
    assert listed(api, query) == [traffic[name]["id"] for name in expected]


def test_search_answers_summaries_with_numbers_masked(api, traffic):
    answer = api.get("/api/events?code=7500", headers=AUTH)
    assert answer.json["next_cursor"] is None
    (item,) = answer.json["events"]
    assert item == {
        "id": traffic["undelivered"]["id"],
        "accepted_at": traffic["undelivered"]["received_at"],
        "kind": "delivery_receipt",
        "source": "eu",
        "summary": "Un-Delivered 7500",
        "status": "Un-Delivered",
        "code": "7500",
        "keyword": None,
        "number": "********0123",
        "sender": None,
        "recipient": None,
        "routes": ["failures"],
        "destinations": ["trace", "failures-webhook"],
        "state": "pending",
    }


def test_search_pages_through_the_api_while_events_arrive(api, store):
    events = [receipt(at=NOW - 60 + i / 10) for i in range(23)]
    for event in events:
        route(store, event, ["failures"], ["trace"])
    seen, cursor = [], ""
    while True:
        answer = api.get(f"/api/events?limit=5&destination=trace&cursor={cursor}", headers=AUTH)
        assert answer.status_code == 200
        seen += [item["id"] for item in answer.json["events"]]
        route(store, receipt(at=time.time()), ["failures"], ["trace"])  # arrives meanwhile
        cursor = answer.json["next_cursor"]
        if cursor is None:
            break
    assert seen == [event["id"] for event in reversed(events)]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("colour=red", "colour"),
        ("state=lost", "state"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("since=yesterday", "since"),
        ("until=2024-13-45", "until"),
        ("since=2h&until=3h", "until"),
        ("cursor=garbage", "cursor"),
        ("kind=a&kind=b", "kind"),
    ],
)
def test_a_bad_search_parameter_is_a_400_naming_it(api, query, field):
    answer = api.get(f"/api/events?{query}", headers=AUTH)
    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_request"
    assert answer.json["field"] == field


# -- re-route -------------------------------------------------------------------------------


def test_reroute_of_an_unknown_event_is_a_404(api):
    answer = api.post("/api/events/01UNKNOWN/reroute", headers=AUTH)
    assert answer.status_code == 404
    assert "01UNKNOWN" in answer.json["detail"]


def test_reroute_registers_new_deliveries_before_publishing(api, store, traffic):
    event_id = traffic["failed"]["id"]
    answer = api.post(f"/api/events/{event_id}/reroute", headers=AUTH)
    assert answer.status_code == 202
    (item,) = answer.json["rerouted"]
    assert item["routes"] == ["failures"]
    assert item["routing"] == 2
    assert item["delivery_ids"] == [f"{event_id}:trace~2", f"{event_id}:failures-webhook~2"]
    for did in item["delivery_ids"]:  # in the outbox: the sweeper publishes a lost one
        spec = store.pending.get(f"deliver:{did}")
        assert spec["task"] == "relay.deliver" and spec["args"][0]["delivery_id"] == did
    steps = [entry["step"] for entry in store.history(event_id)]
    assert steps == ["received", "routed", "delivered", "delivered", "rerouted"]
    assert store.index.state(event_id) == "pending"  # delivered before; open again
    # the timeline lists both routings' deliveries
    timeline = api.get(f"/api/events/{event_id}", headers=AUTH).json["events"][0]
    assert [d["delivery_id"] for d in timeline["deliveries"]] == [
        f"{event_id}:trace",
        f"{event_id}:failures-webhook",
        *item["delivery_ids"],
    ]
    assert [d["state"] for d in timeline["deliveries"]] == [
        "delivered",
        "delivered",
        "pending",
        "pending",
    ]


# -- rules diff -----------------------------------------------------------------------------

CANDIDATE = RULES.replace(
    "  trace:\n    type: log",
    "  crm-v2:\n    type: log\n    text: x\n  trace:\n    type: log",
).replace("    to: [trace, failures-webhook]", "    to: [trace, crm-v2]")


def test_rules_diff_lists_the_events_that_would_change_grouped(api, traffic):
    answer = api.post("/api/rules/diff?since=1h", data=CANDIDATE, headers=AUTH)
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert (body["examined"], body["changed"], body["complete"]) == (4, 2, True)
    (change,) = body["changes"]
    assert change["label"] == "2 events: trace, failures-webhook → trace, crm-v2"
    assert change["before"] == {
        "routes": ["failures"],
        "destinations": ["trace", "failures-webhook"],
    }
    assert change["after"] == {"routes": ["failures"], "destinations": ["trace", "crm-v2"]}
    assert change["event_ids"] == [traffic["undelivered"]["id"], traffic["failed"]["id"]]
    assert body["candidate_version"] != body["current_version"]


def test_rules_diff_of_the_same_rules_changes_nothing(api, traffic):
    answer = api.post("/api/rules/diff", data=RULES, headers=AUTH)
    assert answer.status_code == 200
    assert (answer.json["examined"], answer.json["changed"], answer.json["changes"]) == (4, 0, [])


def back_to(moment: float) -> str:
    """A ``since`` duration reaching back to ``moment`` (the traffic is placed around NOW)."""
    return f"{time.time() - moment:.3f}s"


def test_rules_diff_window_and_limit(api, traffic):
    since = back_to(NOW - 25)
    body = api.post(f"/api/rules/diff?since={since}&limit=1", data=CANDIDATE, headers=AUTH).json
    assert (body["examined"], body["complete"]) == (1, False)  # the newest one
    answer = api.post(f"/api/rules/diff?since={back_to(NOW - 35)}", data=CANDIDATE, headers=AUTH)
    assert (answer.json["examined"], answer.json["changed"]) == (3, 1)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("version: 1\nroutes: [\n", "candidate.yaml:3"),
        (
            "version: 1\ndestinations: {}\nroutes:\n  - name: a\n    to: [nowhere]\n",
            "candidate.yaml:5",
        ),
    ],
)
def test_a_candidate_that_does_not_load_is_a_400_with_file_line_errors(api, body, where):
    answer = api.post("/api/rules/diff", data=body, headers=AUTH)
    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_rules"
    assert answer.json["field"] == "body"
    assert answer.json["errors"][0].startswith(where), answer.json["errors"]


@pytest.mark.parametrize(
    ("query", "body", "field"),
    [
        ("", "", "body"),
        ("", b"\xff\xfe", "body"),
        ("since=soon", RULES, "since"),
        ("limit=0", RULES, "limit"),
        ("what=ever", RULES, "what"),
    ],
)
def test_a_bad_diff_request_names_its_field(api, query, body, field):
    answer = api.post(f"/api/rules/diff?{query}", data=body, headers=AUTH)
    assert answer.status_code == 400
    assert answer.json["field"] == field


def test_diff_errors_show_a_placeholder_never_the_environment_value(api, monkeypatch):
    monkeypatch.setenv("H2_DIFF_SECRET", "ftp-secret-value")
    body = "version: 1\ndestinations:\n  a:\n    type: http\n    url: ${H2_DIFF_SECRET}\n"
    body += "    timeout: ${H2_DIFF_SECRET}\nroutes:\n  - name: r\n    to: [a]\n"
    answer = api.post("/api/rules/diff", data=body, headers=AUTH)
    assert answer.status_code == 400
    assert answer.json["errors"] == [
        "candidate.yaml:6: destinations.a.timeout: bad duration '<H2_DIFF_SECRET>' "
        "(use 250ms, 2s, 10m, 24h, 7d, or a number of seconds) (${H2_DIFF_SECRET} is "
        "<H2_DIFF_SECRET> here: the environment is not read; give it a default to check it, "
        "${H2_DIFF_SECRET:-…})"
    ]
    assert "secret-value" not in answer.get_data(as_text=True)
