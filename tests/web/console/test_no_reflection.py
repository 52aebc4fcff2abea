"""What a link puts in a console URL comes back as text, never as markup: every console
page, as the web process (gunicorn) serves it to a logged-in client. The browser test
(test_browser.py) opens such a link in Chromium."""

from __future__ import annotations

import re

import pytest
import requests

from tests.harness import web_process
from tests.web.console.conftest import ADMIN, VIEWER, csrf_of

LURE = '<meta http-equiv="refresh" content="0;url=https://evil.example/">'

#: every console page that reads its URL, with the lure where the URL can carry it
PAGES = [
    ("/ui/event-rows", {"since": LURE}),
    ("/ui/event-rows", {"keyword": LURE, "until": LURE}),
    ("/ui/events", {"since": LURE}),
    ("/ui/events", {"status": LURE, "route": LURE, "destination": LURE, "cursor": LURE}),
    ("/ui/dead-letters", {"older_than": LURE, "destination": LURE}),
    ("/ui/events/" + LURE, {}),
    ("/ui/events/01EVENT", {"replayed": LURE, "rerouted": LURE}),
    ("/ui/rules", {"sample": LURE}),
    ("/ui/", {"done": LURE}),
    ("/ui/login", {"next": LURE}),
    ("/ui/no-such-page/" + LURE, {}),
]


@pytest.fixture(scope="module")
def base(redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("web") / "web.log"
    env = {"RELAY_ADMIN_TOKEN": ADMIN, "RELAY_VIEWER_TOKEN": VIEWER}
    with web_process(redis_server.url, log, **env) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def browser(base):
    """A logged-in client, as a browser would be."""
    with requests.Session() as session:
        form = session.get(base + "/ui/login", timeout=5)
        answer = session.post(
            base + "/ui/login",
            data={"token": ADMIN, "csrf_token": csrf_of(form.text)},
            allow_redirects=False,
            timeout=5,
        )
        assert answer.status_code == 302, answer.text
        yield session


def test_what_a_link_says_is_never_served_as_markup_by_any_page(base, browser):
    served_as_markup = []
    for path, query in PAGES:
        answer = browser.get(base + path, params=query, allow_redirects=False, timeout=5)
        kind = answer.headers["Content-Type"]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert kind.startswith(("text/html", "text/plain", "application/json")), kind
        if kind.startswith("text/html") and re.search(r"<meta http-equiv", answer.text, re.I):
            served_as_markup.append((path, query))
    assert served_as_markup == []


def test_a_bad_filter_of_the_event_rows_is_plain_text_naming_the_field(base, browser):
    answer = browser.get(base + "/ui/event-rows", params={"since": LURE}, timeout=5)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.text.startswith("since: ") and LURE in answer.text
