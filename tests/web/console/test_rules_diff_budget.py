"""A diff whose time runs out says so: the console page and the admin API's JSON (the
time allowed, relay.ops.rules_diff.WEB_BUDGET, shortened to nothing here)."""

from __future__ import annotations

import time

import pytest

from relay.ops import rules_diff
from tests.ops.test_search import receipt, route
from tests.web.console.conftest import ADMIN, login

CANDIDATE = "version: 1\ndestinations: {trace: {type: log}}\nroutes: [{name: all, to: trace}]\n"


@pytest.fixture
def out_of_time(monkeypatch, store):
    route(store, receipt(at=time.time() - 5), ["all"], ["trace"])
    monkeypatch.setattr(rules_diff, "WEB_BUDGET", 0.0)


def test_the_console_says_a_diff_was_truncated(console, out_of_time):
    csrf = login(console)
    answer = console.post("/ui/rules/diff", data={"csrf_token": csrf, "candidate": CANDIDATE})
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert 'id="diff-truncated"' in page
    assert "the time allowed ran out first" in page


def test_the_api_says_a_diff_was_truncated(console, out_of_time):
    headers = {"Authorization": f"Bearer {ADMIN}"}
    answer = console.post("/api/rules/diff", data=CANDIDATE, headers=headers)
    assert answer.status_code == 200, answer.json
    assert (answer.json["truncated"], answer.json["complete"]) == (True, False)
