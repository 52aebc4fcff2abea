"""The console on the Flask test client, against the suite's real Redis."""

from __future__ import annotations

import re

import pytest

from relay.settings import load_settings
from relay.state import Store
from relay.web.app import create_app

ADMIN = "adm1n-token-for-tests"
VIEWER = "v1ewer-token-for-tests"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: bytes | str) -> str:
    """The CSRF token a console page carries in its forms."""
    text = page.decode() if isinstance(page, bytes) else page
    match = _CSRF.search(text)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client, token: str = ADMIN) -> str:
    """Log ``client`` in with ``token``; the session's CSRF token."""
    form = client.get("/ui/login")
    assert form.status_code == 200
    answer = client.post("/ui/login", data={"token": token, "csrf_token": csrf_of(form.data)})
    assert answer.status_code == 302, answer.data
    return csrf_of(client.get("/ui/rules").data)


@pytest.fixture
def console_env(env):
    return {**env, "RELAY_ADMIN_TOKEN": ADMIN, "RELAY_VIEWER_TOKEN": VIEWER}


@pytest.fixture
def console_app(console_env):
    return create_app(load_settings(console_env))


@pytest.fixture
def console(console_app):
    """A test client with a console; not logged in."""
    return console_app.test_client()


def seed_dead_letter(
    store: Store, event_id: str = "01EVENT", destination: str = "trace", **event: object
) -> dict:
    record = {
        "id": f"{event_id}:{destination}",
        "event": {
            "id": event_id,
            "kind": "delivery_receipt",
            "received_at": "2024-01-01T00:00Z",
            **event,
        },
        "route": "failures",
        "destination": destination,
        "rules_version": "v1",
        "retry": {"attempts": 3, "initial": 0.1, "max": 0.2},
        "reason": "HTTP 400",
        "dead_at": "2024-01-01T00:00:01.000Z",
        "attempts": [{"attempt": 1, "outcome": "permanent", "status": 400, "error": "HTTP 400"}],
    }
    store.dead_letters.add(record)
    return record
