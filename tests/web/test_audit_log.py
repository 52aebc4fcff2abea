"""The audit log of the web process (gunicorn, JSON logs): one relay.audit line for every
pause, resume, replay, delete, purge, re-route and rules diff asked through the admin API
or the console, saying who (role, address, console or api) and what (ids, counts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.harness import ROOT, wait_until, web_process
from tests.ops.test_search import receipt, route
from tests.web.console.conftest import ADMIN, VIEWER, csrf_of, seed_dead_letter

CANDIDATE = (ROOT / "config" / "rules.yaml").read_text()  #: the rules in force: no change


@pytest.fixture(scope="module")
def web(redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("web") / "web.log"
    env = {"RELAY_ADMIN_TOKEN": ADMIN, "RELAY_VIEWER_TOKEN": VIEWER, "RELAY_LOG_FORMAT": "json"}
    with web_process(redis_server.url, log, **env) as port:
        yield f"http://127.0.0.1:{port}", log


@pytest.fixture
def seeded(store):
    """Three dead letters of ``trace`` and a stored event routed to it: its id."""
    for event_id in ("01A", "01B", "01C"):
        seed_dead_letter(store, event_id, "trace")
    event = receipt()
    route(store, event, ["failures"], ["trace"])
    return event["id"]


def audit_lines(log: Path, after: int) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "relay.audit"][after:]


def what(line: dict) -> tuple:
    return (line["action"], line.get("destination"), line.get("ids"), line.get("count"))


def test_every_change_through_the_api_is_one_audit_line(web, seeded):
    base, log = web
    seen = len(audit_lines(log, 0))
    auth = {"Authorization": f"Bearer {ADMIN}"}

    def call(method: str, path: str, status: int, **kwargs) -> None:
        answer = requests.request(method, base + path, headers=auth, timeout=10, **kwargs)
        assert answer.status_code == status, answer.text

    call("POST", "/api/destinations/trace/pause", 200, json={"for": "1h"})
    call("POST", "/api/destinations/trace/resume", 200)
    call("POST", "/api/dead-letters/01A:trace/replay", 202)
    call("POST", "/api/dead-letters/replay", 202, json={"ids": ["01B:trace", "01X:trace"]})
    call("DELETE", "/api/dead-letters/01C:trace", 200)
    call("DELETE", "/api/dead-letters", 200, params={"older_than": "7d"})
    call("POST", f"/api/events/{seeded}/reroute", 202)
    call("POST", "/api/rules/diff", 200, data=CANDIDATE.encode())
    call("GET", "/api/destinations", 200)  # reading changes nothing: no line
    wait_until(lambda: len(audit_lines(log, seen)) >= 8)
    lines = audit_lines(log, seen)
    assert [what(line) for line in lines] == [
        ("pause", "trace", None, None),
        ("resume", "trace", None, 0),
        ("replay", None, ["01A:trace"], 1),
        ("replay", None, ["01B:trace"], 1),
        ("delete", None, ["01C:trace"], 1),
        ("purge", None, None, 0),
        ("reroute", None, [seeded], 1),
        ("rules_diff", None, None, 1),
    ]
    for line in lines:
        assert (line["role"], line["via"], line["client"]) == ("admin", "api", "127.0.0.1")
        assert line["level"] == "info" and "user" not in line
    assert "trace for 1h" in lines[0]["message"]
    assert "(1 not found)" in lines[3]["message"]
    assert "older than 7d" in lines[5]["message"]


def test_every_change_in_the_console_is_one_audit_line_with_the_session_role(web, seeded):
    base, log = web
    seen = len(audit_lines(log, 0))
    with requests.Session() as admin, requests.Session() as viewer:
        csrf = login(base, admin, ADMIN)

        def post(path: str, **form: object) -> None:
            answer = admin.post(base + path, data={"csrf_token": csrf, **form}, timeout=10)
            assert answer.status_code == 200, answer.text

        post("/ui/destinations/trace/pause", **{"for": "30m"})
        post("/ui/destinations/trace/resume")
        post("/ui/dead-letters/01A:trace/replay")
        post("/ui/dead-letters/bulk", action="delete", confirm="1", ids=["01B:trace", "01C:trace"])
        post(f"/ui/events/{seeded}/reroute")
        post("/ui/rules/diff", candidate=CANDIDATE, since="1h")
        viewer_csrf = login(base, viewer, VIEWER)
        diffed = viewer.post(
            base + "/ui/rules/diff",
            data={"csrf_token": viewer_csrf, "candidate": CANDIDATE, "since": "1h"},
            timeout=10,
        )
        assert diffed.status_code == 200
        refused = viewer.post(
            base + "/ui/destinations/trace/pause", data={"csrf_token": viewer_csrf}, timeout=10
        )
        assert refused.status_code == 403  # refused: nothing done, nothing audited
    wait_until(lambda: len(audit_lines(log, seen)) >= 7)
    lines = audit_lines(log, seen)
    assert [what(line) for line in lines] == [
        ("pause", "trace", None, None),
        ("resume", "trace", None, 0),
        ("replay", None, ["01A:trace"], 1),
        ("delete", None, ["01B:trace", "01C:trace"], 2),
        ("reroute", None, [seeded], 1),
        ("rules_diff", None, None, 1),
        ("rules_diff", None, None, 1),
    ]
    assert [line["role"] for line in lines] == ["admin"] * 6 + ["viewer"]
    assert {(line["via"], line["client"]) for line in lines} == {("console", "127.0.0.1")}


def login(base: str, browser: requests.Session, token: str) -> str:
    """Log ``browser`` in; its session's CSRF token."""
    form = browser.get(base + "/ui/login", timeout=5)
    answer = browser.post(
        base + "/ui/login", data={"token": token, "csrf_token": csrf_of(form.text)}, timeout=5
    )
    assert answer.status_code == 200, answer.text
    return csrf_of(browser.get(base + "/ui/rules", timeout=5).text)
