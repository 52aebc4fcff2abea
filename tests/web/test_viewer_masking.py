"""Phone numbers as the read-only viewer sees them: masked everywhere (API and console),
the first word of an inbound message included; the admin's API answers keep them whole;
RELAY_LOG_PII=1 shows them to everyone. Against the web process as gunicorn serves it."""

from __future__ import annotations

import pytest
import requests

from relay.settings import load_settings
from relay.web.app import create_app
from relay.web.context import relay_of
from tests.harness import web_process
from tests.ops.test_search import inbound, route
from tests.web.console.conftest import ADMIN, VIEWER, csrf_of, seed_dead_letter

FIRST_WORD = "447700900999"  #: the number an inbound message starts with
SENDER = "447700900555"
IN_ERROR = "+44 7700 900123"  #: a number in a receiver's error text
NUMBERS = (FIRST_WORD, SENDER, "441157070619", "7700 900123")


@pytest.fixture(scope="module")
def base(redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("web") / "web.log"
    env = {"RELAY_ADMIN_TOKEN": ADMIN, "RELAY_VIEWER_TOKEN": VIEWER}
    with web_process(redis_server.url, log, **env) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def event(store):
    """An inbound message that starts with a phone number, routed, with a dead letter
    (its event as sent, numbers in it), and a receiver's error naming a number."""
    event = inbound(f"+{FIRST_WORD} call me back", sender=SENDER)
    route(store, event, ["inbound"], ["trace"])
    seed_dead_letter(store, event["id"], "trace", **event)
    store.controls.settle("trace", "x", "permanent", 0.1, f"HTTP 404: no {IN_ERROR}")
    return event


def api(base: str, token: str, path: str) -> requests.Response:
    answer = requests.get(base + path, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer


def shown(text: str) -> list[str]:
    return [number for number in NUMBERS if number in text]


def test_the_viewer_gets_every_number_of_the_api_masked_unless_relay_log_pii(base, event, env):
    paths = [
        f"/api/events/{event['id']}",
        f"/api/dead-letters/{event['id']}:trace",
        "/api/destinations",
        "/api/events?kind=inbound_message",
    ]
    for path in paths:
        viewed = api(base, VIEWER, path).text
        assert shown(viewed) == [], path
    whole = api(base, ADMIN, f"/api/events/{event['id']}").json()["events"][0]["event"]
    assert (whole["sender"], whole["keyword"], whole["raw"]["oa"]) == (SENDER, FIRST_WORD, SENDER)
    masked = api(base, VIEWER, f"/api/events/{event['id']}").json()["events"][0]
    assert masked["summary"] == masked["event"]["keyword"] == "********0999"
    assert masked["event"]["raw"]["oa"] == masked["event"]["sender"] == "********0555"
    assert masked["id"] == event["id"]  # ids and times are not numbers to mask
    assert masked["received_at"] == event["received_at"]
    pii = {"RELAY_ADMIN_TOKEN": ADMIN, "RELAY_VIEWER_TOKEN": VIEWER, "RELAY_LOG_PII": "1"}
    whole_for_all = create_app(load_settings({**env, **pii}))
    answer = whole_for_all.test_client().get(
        f"/api/events/{event['id']}", headers={"Authorization": f"Bearer {VIEWER}"}
    )
    relay_of(whole_for_all).store.client.connection_pool.disconnect()
    found = answer.json["events"][0]
    assert (found["summary"], found["event"]["sender"]) == (FIRST_WORD, SENDER)


def test_the_console_shows_the_first_word_of_a_message_masked(base, event):
    with requests.Session() as browser:
        form = browser.get(base + "/ui/login", timeout=5)
        browser.post(
            base + "/ui/login", data={"token": VIEWER, "csrf_token": csrf_of(form.text)}, timeout=5
        )
        pages = [
            browser.get(base + f"/ui/events/{event['id']}", timeout=5),
            browser.get(base + "/ui/events", params={"kind": "inbound_message"}, timeout=5),
            browser.get(base + "/ui/event-rows", params={"kind": "inbound_message"}, timeout=5),
        ]
    for page in pages:
        assert page.status_code == 200
        assert shown(page.text) == [], page.url
        assert "********0999" in page.text
