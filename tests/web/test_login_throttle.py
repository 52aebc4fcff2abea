"""Logins to the admin API and the console: throttled per client address across web
processes, and logged (address, role; never the token). Against the web process as
gunicorn serves it, with a second app on the same Redis standing in for another process."""

from __future__ import annotations

import json

import pytest
import requests

from relay.settings import load_settings
from relay.web.app import create_app
from relay.web.context import relay_of
from tests.harness import wait_until, web_process
from tests.web.console.conftest import ADMIN, VIEWER, csrf_of

WRONG = "not-the-token-at-all-0000"
LIMIT = 10  #: failed logins in a minute from one address before it must wait (README)
COOLDOWN = 60  #: seconds it then waits


@pytest.fixture(scope="module")
def web(redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("web") / "web.log"
    env = {"RELAY_ADMIN_TOKEN": ADMIN, "RELAY_VIEWER_TOKEN": VIEWER, "RELAY_LOG_FORMAT": "json"}
    with web_process(redis_server.url, log, **env) as port:
        yield f"http://127.0.0.1:{port}", log


def api(base: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(base + "/api/destinations", headers=headers, timeout=5)


def console_login(base: str, token: str) -> requests.Response:
    with requests.Session() as browser:
        form = browser.get(base + "/ui/login", timeout=5)
        return browser.post(
            base + "/ui/login",
            data={"token": token, "csrf_token": csrf_of(form.text)},
            allow_redirects=False,
            timeout=5,
        )


def access_lines(log) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "relay.access"]


def test_ten_wrong_tokens_in_a_minute_make_every_login_from_the_address_wait(web):
    base, _ = web
    for _ in range(3 * LIMIT):  # no credentials at all: refused, but no login was tried
        assert api(base, None).status_code == 401
    for _ in range(LIMIT):
        assert api(base, WRONG).status_code == 401
    refused = api(base, ADMIN)  # the right token too: a lucky guess looks like the others
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_requests"
    assert 0 < int(refused.headers["Retry-After"]) <= COOLDOWN
    assert api(base, VIEWER).status_code == 429
    page = console_login(base, ADMIN)  # one count for the API and the console
    assert page.status_code == 429 and 0 < int(page.headers["Retry-After"]) <= COOLDOWN
    assert "Too many failed logins" in page.text
    assert "Set-Cookie" not in page.headers  # no session


@pytest.fixture
def other(env):
    """Another web process on the same Redis (an app in this one), from the same address."""
    app = create_app(
        load_settings({**env, "RELAY_ADMIN_TOKEN": ADMIN, "RELAY_VIEWER_TOKEN": VIEWER})
    )
    yield app.test_client()
    relay_of(app).store.client.connection_pool.disconnect()


def test_wrong_console_logins_count_for_every_web_process_and_the_api(web, other):
    base, _ = web
    for _ in range(LIMIT // 2):
        assert console_login(base, WRONG).status_code == 401
    for _ in range(LIMIT - LIMIT // 2):
        assert other.get("/api/destinations", headers={"Authorization": WRONG}).status_code == 401
    page = console_login(base, ADMIN)
    assert page.status_code == 429
    assert "Set-Cookie" not in page.headers
    answer = other.get("/api/destinations", headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 429 and "Retry-After" in answer.headers


def test_every_login_is_logged_with_the_address_and_role_never_the_token(web):
    base, log = web
    seen = len(access_lines(log))
    assert api(base, WRONG).status_code == 401
    assert api(base, VIEWER).status_code == 200
    assert console_login(base, ADMIN).status_code == 302
    assert console_login(base, WRONG).status_code == 401
    wait_until(lambda: len(access_lines(log)) >= seen + 4)
    lines = access_lines(log)[seen:]
    assert [(line["via"], line["outcome"], line.get("role")) for line in lines] == [
        ("api", "failed", None),
        ("api", "ok", "viewer"),
        ("console", "ok", "admin"),
        ("console", "failed", None),
    ]
    assert {line["client"] for line in lines} == {"127.0.0.1"}
    assert [line["count"] for line in lines if line["outcome"] == "failed"] == [1, 2]
    text = log.read_text()
    assert WRONG not in text and ADMIN not in text and VIEWER not in text
