"""``/api/destinations``: list, pause, resume, on the Flask test client against the suite's
real Redis (the state every worker reads); resume publishes through the real broker."""

from __future__ import annotations

import time

import pytest

from relay import metrics
from relay.settings import load_settings
from relay.state.client import dumps
from relay.state.keys import PENDING_TASKS
from relay.web.app import create_app

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RULES = """
version: 1
destinations:
  crm:
    type: http
    url: http://127.0.0.1:9/crm
    rate_limit: 20/s
    concurrency: 4
    circuit_breaker: {failures: 5, cooldown: 30s}
  trace: {type: log}
routes:
  - name: all
    to: [crm, trace]
"""


@pytest.fixture
def api(env, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = load_settings({**env, "RELAY_ADMIN_TOKEN": TOKEN, "RELAY_RULES": str(rules)})
    return create_app(settings).test_client()


def by_name(answer) -> dict:
    return {item["name"]: item for item in answer.json["destinations"]}


def test_list_shows_every_destination_with_its_state_and_limits(api, store):
    store.controls.settle("crm", "a", "ok", 0.02)
    store.controls.settle("crm", "b", "transient", 0.3, "HTTP 503")
    spec = {"task": "relay.deliver", "args": [{"delivery_id": "e:crm", "destination": "crm"}]}
    store.client.hset(PENDING_TASKS, "deliver:e:crm", dumps(spec))
    answer = api.get("/api/destinations", headers=AUTH)
    assert answer.status_code == 200
    crm, trace = by_name(answer)["crm"], by_name(answer)["trace"]
    assert crm == {
        **crm,
        "type": "http",
        "state": "active",
        "circuit": "closed",
        "paused_until": None,
        "backlog": 1,
        "attempts": 2,
        "success_rate": 0.5,
        "p95_seconds": 0.5,
        "last_error": "HTTP 503",
        "rate_limit": "20/s",
        "concurrency": 4,
        "circuit_breaker": "5 failures, 30s cooldown",
    }
    assert trace["state"] == "active" and trace["attempts"] == 0 and trace["p95_seconds"] is None
    assert trace["rate_limit"] is None and trace["backlog"] == 0


def test_pause_for_a_while_then_resume_publishes_the_parked(api, store, redis_client):
    answer = api.post("/api/destinations/crm/pause", headers=AUTH, json={"for": "1h"})
    assert answer.status_code == 200
    assert answer.json["state"] == "paused"
    until = answer.json["paused_until"]
    assert until is not None and until > time.strftime("%Y-%m-%dT%H:%M", time.gmtime())
    assert by_name(api.get("/api/destinations", headers=AUTH))["crm"]["state"] == "paused"
    assert 3590 < store.client.ttl("relay:dest:crm:paused") <= 3600
    job = {"delivery_id": "e:crm", "destination": "crm"}
    store.client.hset(
        PENDING_TASKS, "deliver:e:crm", dumps({"task": "relay.deliver", "args": [job]})
    )
    assert store.controls.gate("crm", "e:crm", 5).reason == "paused"  # parked
    resumed = api.post("/api/destinations/crm/resume", headers=AUTH)
    assert resumed.status_code == 200
    assert resumed.json["republished"] == 1
    assert resumed.json["destination"]["state"] == "active"
    assert redis_client.llen("relay.deliver") == 1  # published to the broker's queue


def test_pause_without_a_body_lasts_until_resumed(api, store):
    answer = api.post("/api/destinations/trace/pause", headers=AUTH)
    assert answer.status_code == 200
    assert answer.json["state"] == "paused" and answer.json["paused_until"] is None
    assert store.client.ttl("relay:dest:trace:paused") == -1


@pytest.mark.parametrize("path", ["/api/destinations/nope/pause", "/api/destinations/nope/resume"])
def test_an_unknown_destination_is_a_404_naming_it(api, path):
    answer = api.post(path, headers=AUTH)
    assert answer.status_code == 404
    assert answer.json == {"error": "not_found", "detail": "no destination 'nope' in the rules"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"for": "soon"}, "for"),
        ({"for": 0}, "for"),
        ({"for": "-1h"}, "for"),
        ({"until": 1}, "until"),
    ],
)
def test_a_bad_pause_body_is_a_400_naming_the_field(api, store, body, field):
    answer = api.post("/api/destinations/crm/pause", headers=AUTH, json=body)
    assert answer.status_code == 400
    assert answer.json["field"] == field
    assert store.controls.paused(["crm"]) == {}


def test_the_scrape_reports_circuits_and_pauses(store):
    store.controls.pause("trace")
    for _ in range(2):
        store.controls.settle("crm", "a", "transient", 0.1, "503", failures=2, cooldown=30)
    body, _ = metrics.render(store)
    text = body.decode()
    assert 'relay_destination_circuit_state{destination="crm"} 1.0' in text
    assert 'relay_destination_paused{destination="trace"} 1.0' in text
    assert 'relay_destination_paused{destination="crm"} 0.0' in text
    assert 'relay_destination_paused_seconds{destination="trace"}' in text
