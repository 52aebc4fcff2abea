"""What operators see of ordered delivery: blocked keys in ``/api/destinations`` (a viewer
gets phone numbers masked), the console's overview and ``relay destinations list``; why a
delivery waits in ``/api/events/<id>`` and ``relay events show``; deleting the dead letter
that blocks a key, through the API, sends the key's next delivery.

The worker's side runs in process (its routing and delivery code, a real receiver); the
web app and the commands read the same Redis and rules file."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import redis

from relay.events import new_id
from relay.parsing import build_events
from relay.settings import load_settings
from relay.web.app import create_app
from relay.worker.routing import route_event
from tests.harness import FIXTURES, ROOT, in_process_runtime, relay_env
from tests.httpsink import Answer
from tests.web.console.conftest import ADMIN, VIEWER, login

NUMBER = "447700900123"
RULES = """
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 2s
    ordered_by: destination
    on_failure: block
routes: [{{name: all, to: [hook]}}]
"""


@pytest.fixture
def blocked(redis_server, sink, tmp_path):
    """Two receipts to one number; the first's delivery dead-lettered, holding the key."""
    rules = RULES.format(url=sink.url("/hook"))
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    runtime, store, _ = in_process_runtime(redis_server.url, rules)
    payload = json.loads((FIXTURES / "receipt-delivered.json").read_text())
    events = []
    for _ in range(2):
        (event,), _ = build_events(payload, "default", frozenset())
        events.append({**event, "id": new_id(), "destination": NUMBER})
    orders = [runtime.rules.current.order_values(event) for event in events]
    store.accept([f"fp-{e['id']}" for e in events], events, orders)
    sink.script(Answer(400))
    assert route_event(runtime, events[0]) == ["dead_lettered"]
    assert route_event(runtime, events[1]) == ["queued"]
    env = relay_env(
        redis_server.url,
        RELAY_RULES=str(path),
        RELAY_ADMIN_TOKEN=ADMIN,
        RELAY_VIEWER_TOKEN=VIEWER,
    )
    return env, events


def test_blocked_keys_show_in_the_api_masked_for_a_viewer(blocked):
    env, (first, _) = blocked
    client = create_app(load_settings(env)).test_client()
    answer = client.get("/api/destinations", headers={"Authorization": f"Bearer {ADMIN}"})
    (hook,) = answer.json["destinations"]
    assert (hook["ordered_by"], hook["blocked_keys"]) == ("destination", 1)
    ((key),) = hook["blocked"]
    assert (key["value"], key["delivery_id"]) == (NUMBER, f"{first['id']}:hook")
    answer = client.get("/api/destinations", headers={"Authorization": f"Bearer {VIEWER}"})
    (seen,) = answer.json["destinations"][0]["blocked"]
    assert "7700900123" not in seen["value"] and seen["value"].endswith("0123")


def test_the_overview_shows_the_blocked_keys_masked(blocked):
    env, (first, _) = blocked
    client = create_app(load_settings(env)).test_client()
    login(client)
    page = client.get("/ui/").data.decode()
    assert "1 destination key blocked" in page and f"{first['id']}:hook" in page
    assert "ordered by destination" in page
    assert NUMBER not in page


def test_why_a_delivery_waits_shows_in_the_api_and_events_show(blocked):
    env, (first, second) = blocked
    client = create_app(load_settings(env)).test_client()
    answer = client.get(f"/api/events/{second['id']}", headers={"Authorization": f"Bearer {ADMIN}"})
    (delivery,) = answer.json["events"][0]["deliveries"]
    why = (
        f"waits its turn after {first['id']} (same destination),"
        " whose dead letter holds the key (on_failure: block)"
    )
    assert (delivery["state"], delivery["waiting"]) == ("pending", why)
    shown = relay_command(env, "events", "show", second["id"])
    assert f"final: hook pending ({why})" in shown
    listed = relay_command(env, "destinations", "list")
    assert "active, 1 key blocked" in listed and "ordered by destination" in listed


def test_deleting_the_blocking_dead_letter_through_the_api_sends_the_next(blocked):
    env, (first, second) = blocked
    client = create_app(load_settings(env)).test_client()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    answer = client.delete(f"/api/dead-letters/{first['id']}:hook", headers=auth)
    assert answer.status_code == 200, answer.json
    (hook,) = client.get("/api/destinations", headers=auth).json["destinations"]
    assert hook["blocked_keys"] == 0
    broker = redis.Redis.from_url(env["RELAY_REDIS_URL"])
    (message,) = broker.lrange("relay.deliver", 0, -1)  # the Celery message, published
    broker.close()
    ((job,), _, _) = json.loads(base64.b64decode(json.loads(message)["body"]))
    assert job["delivery_id"] == f"{second['id']}:hook" and job["order"]["block"]


def relay_command(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
