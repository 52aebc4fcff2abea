"""The console's pages on the Flask test client against the suite's real Redis: what they
show, what their forms do, and what they refuse (the browser tests go end to end)."""

from __future__ import annotations

import re

import pytest

from relay.settings import load_settings
from relay.state.keys import deliver_member
from relay.web.app import create_app
from relay.web.console import session as sessions
from relay.web.console.overview import NOTICE_MAX_AGE
from tests.ops.test_search import receipt, route
from tests.web.console.conftest import ADMIN, csrf_of, login, seed_dead_letter

SECRET_RULES = """version: 1
destinations:
  crm:
    type: http
    url: https://crm.example/hook?api_key=abc123secret
    headers: {Authorization: "Bearer literal-crm-secret", X-Env: "${CONSOLE_TEST_SECRET}"}
  trace: {type: log, text: "{{ event.id }}"}
routes:
  - name: failures
    match: {kind: delivery_receipt, status: [Failed]}
    to: [crm, trace]
default: {to: [trace]}
"""


@pytest.fixture
def admin(console):
    login(console)
    return console


def page_csrf(client) -> str:
    return csrf_of(client.get("/ui/rules").data)


def destination_row(page: str, name: str) -> str:
    """The overview's table row of destination ``name``."""
    found = re.search(rf'<tr data-destination="{name}".*?</tr>', page, re.S)
    assert found, f"no row for {name}"
    return found.group()


# -- dead letters -----------------------------------------------------------------------------


def test_dead_letters_filter_by_destination_and_age(admin, store):
    seed_dead_letter(store, "01A", "crm")
    seed_dead_letter(store, "01B", "crm")
    seed_dead_letter(store, "01C", "trace")
    crm = admin.get("/ui/dead-letters?destination=crm").data.decode()
    assert "01A:crm" in crm and "01B:crm" in crm and "01C:trace" not in crm
    assert admin.get("/ui/dead-letters?older_than=1h").data.count(b'name="ids"') == 0
    assert admin.get("/ui/dead-letters?newer_than=1h").data.count(b'name="ids"') == 3


def test_a_bad_age_is_a_400_naming_the_field(admin):
    answer = admin.get("/ui/dead-letters?older_than=soon")
    assert answer.status_code == 400
    assert b"older_than: bad duration &#39;soon&#39;" in answer.data


def test_bulk_replay_says_how_many_first_and_sends_nothing_until_confirmed(admin, store):
    for event_id in ("01A", "01B", "01C"):
        seed_dead_letter(store, event_id, "crm")
    csrf = page_csrf(admin)
    ids = ["01A:crm", "01B:crm"]
    confirm = admin.post(
        "/ui/dead-letters/bulk", data={"csrf_token": csrf, "action": "replay", "ids": ids}
    )
    assert confirm.status_code == 200
    assert b'data-confirm-count="2"' in confirm.data
    assert b"This will send <strong>2</strong> deliveries again" in confirm.data
    assert sorted(store.dead_letters.ids()) == ["01A:crm", "01B:crm", "01C:crm"]
    assert store.pending.get(deliver_member("01A:crm")) is None
    done = admin.post(
        "/ui/dead-letters/bulk",
        data={"csrf_token": csrf, "action": "replay", "ids": ids, "confirm": "1"},
    )
    assert b'data-done="2"' in done.data
    assert store.dead_letters.ids() == ["01C:crm"]
    assert store.pending.get(deliver_member("01A:crm"))["task"] == "relay.deliver"


def test_replay_all_matching_counts_what_the_filter_selects(admin, store):
    seed_dead_letter(store, "01A", "crm")
    seed_dead_letter(store, "01B", "trace")
    confirm = admin.post(
        "/ui/dead-letters/bulk",
        data={
            "csrf_token": page_csrf(admin),
            "action": "replay",
            "scope": "matching",
            "destination": "crm",
        },
    )
    assert b'data-confirm-count="1"' in confirm.data
    assert re.findall(rb'name="ids" value="([^"]+)"', confirm.data) == [b"01A:crm"]


def test_bulk_delete_is_confirmed_too(admin, store):
    seed_dead_letter(store, "01A", "crm")
    csrf = page_csrf(admin)
    form = {"csrf_token": csrf, "action": "delete", "ids": "01A:crm"}
    confirm = admin.post("/ui/dead-letters/bulk", data=form)
    assert b"This will delete <strong>1</strong> dead letter for good" in confirm.data
    assert store.dead_letters.ids() == ["01A:crm"]
    admin.post("/ui/dead-letters/bulk", data={**form, "confirm": "1"})
    assert store.dead_letters.ids() == []


def test_bulk_with_nothing_selected_or_an_unknown_action_is_400(admin):
    csrf = page_csrf(admin)
    nothing = admin.post("/ui/dead-letters/bulk", data={"csrf_token": csrf, "action": "replay"})
    assert nothing.status_code == 400 and b"Select at least one" in nothing.data
    unknown = admin.post(
        "/ui/dead-letters/bulk", data={"csrf_token": csrf, "action": "purge", "ids": "x"}
    )
    assert unknown.status_code == 400


def test_phone_numbers_are_masked_as_in_the_logs(admin, store):
    record = seed_dead_letter(store, "01A", "crm")
    record["attempts"][0]["error"] = "HTTP 400: no customer +44 7700 900123"
    store.dead_letters.add(record)
    page = admin.get("/ui/dead-letters").data.decode()
    assert "+** **** **0123" in page and "7700 900123" not in page


def test_with_relay_log_pii_phone_numbers_are_shown_whole(console_env, store):
    client = create_app(load_settings({**console_env, "RELAY_LOG_PII": "1"})).test_client()
    login(client)
    record = seed_dead_letter(store, "01A", "crm")
    record["attempts"][0]["error"] = "HTTP 400: no customer +44 7700 900123"
    store.dead_letters.add(record)
    assert b"+44 7700 900123" in client.get("/ui/dead-letters").data


# -- rules --------------------------------------------------------------------------------------


@pytest.fixture
def rules_console(console_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CONSOLE_TEST_SECRET", "env-secret-value")
    path = tmp_path / "rules.yaml"
    path.write_text(SECRET_RULES)
    app = create_app(load_settings({**console_env, "RELAY_RULES": str(path)}))
    client = app.test_client()
    login(client)
    return client, path, app


def test_the_rules_file_is_shown_with_its_secrets_masked(rules_console):
    client, _, _ = rules_console
    page = client.get("/ui/rules").data.decode()
    assert "literal-crm-secret" not in page and "abc123secret" not in page
    assert "env-secret-value" not in page
    assert "Authorization: &#34;****&#34;" in page and "api_key=****" in page
    assert "${CONSOLE_TEST_SECRET}" in page


def test_a_failed_reload_is_shown_with_the_version_still_in_force(rules_console):
    client, path, app = rules_console
    from relay.web.context import relay_of

    holder = relay_of(app).rules_holder
    version = holder.current.version
    path.write_text(SECRET_RULES.replace("to: [crm, trace]", "to: [nowhere]"))
    holder.check()
    page = client.get("/ui/rules").data.decode()
    assert f"still running version {version}" in page and "reload failed" in page
    assert "is not the one in force" in page
    overview = client.get("/ui/").data.decode()
    assert "reload failed" in overview


def test_the_playground_names_a_bad_payload(admin):
    answer = admin.post(
        "/ui/rules/playground", data={"csrf_token": page_csrf(admin), "payload": "{not json"}
    )
    assert answer.status_code == 400
    assert b"body: " in answer.data


def test_the_playground_masks_numbers_in_what_it_explains(admin):
    answer = admin.post(
        "/ui/rules/playground",
        data={
            "csrf_token": page_csrf(admin),
            "payload": '{"oa": "447700900123", "da": "12345", "message": "hello"}',
        },
    )
    assert answer.status_code == 200
    text = answer.data.decode()
    explained = text[text.index('id="explained"') :]
    assert "routes matched: inbound" in explained
    assert "447700900123" not in text.split('name="payload"')[0] + explained


def test_a_candidate_that_does_not_load_is_listed_with_file_and_line(admin):
    answer = admin.post(
        "/ui/rules/diff",
        data={"csrf_token": page_csrf(admin), "candidate": "version: 1\nroutes: [}\n"},
    )
    assert answer.status_code == 400
    assert b"candidate.yaml:2:" in answer.data


def test_a_candidate_cannot_read_the_environment(admin, monkeypatch):
    monkeypatch.setenv("CONSOLE_TEST_SECRET", "env-secret-value")
    candidate = (
        "version: 1\ndestinations:\n  a: {type: http, url: '${CONSOLE_TEST_SECRET}'}\n"
        "routes: [{name: 'x${CONSOLE_TEST_SECRET}', to: a, retry: {attempts: 0}}]\n"
    )
    answer = admin.post(
        "/ui/rules/diff", data={"csrf_token": page_csrf(admin), "candidate": candidate}
    )
    assert answer.status_code == 400
    assert b"candidate.yaml:4: routes[0].retry.attempts" in answer.data
    assert b"env-secret-value" not in answer.data


@pytest.mark.parametrize(("field", "value"), [("since", "soon"), ("limit", "0")])
def test_a_bad_diff_window_names_the_field(admin, field, value):
    answer = admin.post(
        "/ui/rules/diff",
        data={"csrf_token": page_csrf(admin), "candidate": "version: 1", field: value},
    )
    assert answer.status_code == 400
    assert field.encode() in answer.data


# -- overview and events ------------------------------------------------------------------------


def test_the_overview_counts_each_destination_backlog_from_the_outbox(admin, store):
    for did in ("01A:trace", "01B:trace", "01C:trace~2"):
        job = {"delivery_id": did, "destination": "trace"}
        store.pending.register_now(deliver_member(did), "relay.deliver", [job])
    store.pending.register_now("route:01D", "relay.route", [{}])
    page = admin.get("/ui/").data.decode()
    row = destination_row(page, "trace")
    assert re.search(r'<td class="num backlog">\s*3\s*</td>', row)


def test_a_bad_search_filter_is_a_400_naming_the_field(admin):
    answer = admin.get("/ui/events?state=lost")
    assert answer.status_code == 400
    assert b"state: must be one of" in answer.data
    assert admin.get("/ui/event-rows?since=whenever").status_code == 400


def test_a_route_or_destination_filter_no_longer_in_the_rules_stays_selected(admin):
    # history keeps the names of routings under rules since changed: the form searches
    # for them as asked, and searching again keeps them
    page = admin.get("/ui/events?route=old-route&destination=old-crm").data.decode()
    for name, value in (("route", "old-route"), ("destination", "old-crm")):
        select = re.search(rf'<select name="{name}">(.*?)</select>', page, re.S).group(1)
        assert re.findall(r"<option [^>]*selected[^>]*>([^<]*)<", select) == [value]


def test_an_unknown_event_is_a_404_page(admin):
    answer = admin.get("/ui/events/01NOPE")
    assert answer.status_code == 404
    assert b"No event 01NOPE" in answer.data


def test_the_event_page_reports_a_replay_or_re_route_only_when_the_console_signed_it(
    admin, store, console_env
):
    settings = load_settings(console_env)
    event = receipt()
    route(store, event, ["failures"], ["crm"])
    path, did = f"/ui/events/{event['id']}", f"{event['id']}:crm"
    signed = {"replayed": sessions.seal(settings, did), "rerouted": sessions.seal(settings, "2")}
    page = admin.get(path, query_string=signed).data.decode()
    assert 'id="replayed"' in page and 'id="rerouted"' in page
    page = admin.get(path, query_string={"replayed": did, "rerouted": "2"}).data.decode()
    assert 'id="replayed"' not in page and 'id="rerouted"' not in page  # a link's claim


def test_the_login_page_never_shows_the_token(console):
    page = console.get("/ui/login").data.decode()
    assert ADMIN not in page
    assert 'type="password"' in page


def test_event_data_is_shown_as_text_never_as_markup(admin, store):
    seed_dead_letter(store, "01A", "crm")
    record = store.dead_letters.get("01A:crm")
    record["attempts"][0]["error"] = 'HTTP 400: <script>alert("x")</script>'
    store.dead_letters.add(record)
    page = admin.get("/ui/dead-letters").data.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    explained = admin.post(
        "/ui/rules/playground",
        data={
            "csrf_token": page_csrf(admin),
            "payload": '{"oa": "1", "da": "2", "message": "<img src=x onerror=alert(1)>"}',
        },
    ).data.decode()
    assert "<img src=x" not in explained and "&lt;img src=x onerror=alert(1)&gt;" in explained


def test_the_overview_counts_each_destination_dead_letters_and_shows_the_newest(admin, store):
    seed_dead_letter(store, "01A", "trace")
    newest = seed_dead_letter(store, "01B", "trace")
    newest["reason"] = "HTTP 503 from +44 7700 900123"
    store.dead_letters.add(newest)
    page = admin.get("/ui/").data.decode()
    row = destination_row(page, "trace")
    assert ">2</a>" in row
    assert "HTTP 503 from +** **** **0123" in row and "ago)" in row


# -- destinations: state, pause and resume ------------------------------------------------------

CONTROLLED_RULES = """version: 1
destinations:
  crm:
    type: http
    url: http://127.0.0.1:9/crm
    rate_limit: 20/s
    concurrency: 4
    circuit_breaker: {failures: 2, cooldown: 30s}
  trace: {type: log}
routes:
  - name: all
    to: [crm, trace]
"""


@pytest.fixture
def controlled(console_env, tmp_path):
    """An admin's test client on rules whose ``crm`` has every control."""
    path = tmp_path / "rules.yaml"
    path.write_text(CONTROLLED_RULES)
    client = create_app(load_settings({**console_env, "RELAY_RULES": str(path)})).test_client()
    login(client)
    return client


def park(store, name: str, event_id: str = "01E") -> str:
    """A pending delivery to ``name`` that the worker's gate parked (``name`` is paused)."""
    did = f"{event_id}:{name}"
    job = {"delivery_id": did, "destination": name}
    store.pending.register_now(deliver_member(did), "relay.deliver", [job])
    assert store.controls.gate(name, did, 5).reason == "paused"
    return did


def test_the_overview_shows_each_destination_state_health_and_limits(controlled, store):
    store.controls.settle("crm", "a", "ok", 0.02)
    store.controls.settle("crm", "b", "ok", 0.03)
    store.controls.settle("crm", "c", "transient", 0.3, "HTTP 503 from +44 7700 900123")
    for did in ("d", "e"):  # two transient failures in a row: open
        store.controls.settle("crm", did, "transient", 0.2, "HTTP 503", failures=2, cooldown=30)
    job = {"delivery_id": "01A:crm", "destination": "crm"}
    store.pending.register_now(deliver_member("01A:crm"), "relay.deliver", [job])
    store.controls.pause("trace", 3600)
    page = controlled.get("/ui/").data.decode()
    crm = destination_row(page, "crm")
    assert 'data-state="open"' in crm and "circuit open" in crm
    assert re.search(r'<td class="num backlog">\s*1\s*</td>', crm)
    assert '40.0 % <span class="muted">of 5</span>' in crm
    assert "≤ 500 ms" in crm  # the upper bound of the 95th percentile's latency bucket
    assert "HTTP 503 <span" in crm and "0s ago)" in crm
    assert "rate 20/s" in crm and "4 at once" in crm and "breaker: 2 failures, 30s cooldown" in crm
    trace = destination_row(page, "trace")
    assert 'data-state="paused"' in trace
    assert re.search(r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC<br>\(in (59m \d+s|1h 0m)\)", trace)
    assert "no attempts" in trace and '<span class="muted">none</span>' in trace
    assert 'action="/ui/destinations/trace/resume"' in trace and "/pause" not in trace
    assert 'action="/ui/destinations/crm/pause"' in crm and "/resume" not in crm


def test_the_last_error_is_masked_as_in_the_logs(controlled, store):
    store.controls.settle("crm", "a", "permanent", 0.1, "HTTP 404: no +44 7700 900123")
    crm = destination_row(controlled.get("/ui/").data.decode(), "crm")
    assert "+** **** **0123" in crm and "7700 900123" not in crm


def test_an_admin_pauses_a_destination_for_a_while(controlled, store):
    csrf = page_csrf(controlled)
    answer = controlled.post("/ui/destinations/crm/pause", data={"csrf_token": csrf, "for": "1h"})
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith("/ui/?done=")
    pause = store.controls.paused(["crm"])["crm"]
    assert pause.until is not None and 3590 < pause.until - pause.since <= 3600
    assert 3590 < store.client.ttl("relay:dest:crm:paused") <= 3600
    page = controlled.get(answer.headers["Location"]).data.decode()
    notice = re.search(r'<p class="notice notice-ok" role="status">(.*?)</p>', page).group(1)
    assert re.fullmatch(r"crm paused for 1h, until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.", notice)
    assert 'data-state="paused"' in destination_row(page, "crm")


def test_a_pause_without_a_duration_lasts_until_resumed(controlled, store):
    csrf = page_csrf(controlled)
    answer = controlled.post(
        "/ui/destinations/crm/pause", data={"csrf_token": csrf, "for": ""}, follow_redirects=True
    )
    assert answer.status_code == 200
    assert b"crm paused until resumed." in answer.data
    assert store.controls.paused(["crm"])["crm"].until is None
    assert store.client.ttl("relay:dest:crm:paused") == -1
    assert "until resumed" in destination_row(answer.data.decode(), "crm")


def test_resume_sends_the_parked_deliveries_again_and_says_how_many(
    controlled, store, redis_client
):
    store.controls.pause("crm")
    park(store, "crm", "01A")
    park(store, "crm", "01B")
    csrf = page_csrf(controlled)
    answer = controlled.post("/ui/destinations/crm/resume", data={"csrf_token": csrf})
    assert answer.status_code == 303
    assert store.controls.paused(["crm"]) == {}
    assert redis_client.llen("relay.deliver") == 2  # published to the broker's queue
    page = controlled.get(answer.headers["Location"]).data.decode()
    assert "crm resumed: 2 waiting deliveries sent again." in page
    assert 'data-state="active"' in destination_row(page, "crm")
    again = controlled.post(
        "/ui/destinations/crm/resume", data={"csrf_token": csrf}, follow_redirects=True
    )
    assert b"crm resumed: 0 waiting deliveries sent again." in again.data
    assert redis_client.llen("relay.deliver") == 2


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("soon", "for: bad duration &#39;soon&#39; (use 250ms"),
        ("0", "for: bad duration &#39;0&#39; (more than 0 and at most 366d)"),
        ("400d", "for: bad duration &#39;400d&#39; (more than 0 and at most 366d)"),
        ("-5m", "for: bad duration &#39;-5m&#39;"),
    ],
)
def test_a_bad_pause_duration_is_a_400_naming_the_field(controlled, store, value, problem):
    answer = controlled.post(
        "/ui/destinations/crm/pause", data={"csrf_token": page_csrf(controlled), "for": value}
    )
    assert answer.status_code == 400
    assert b"Bad duration" in answer.data
    assert problem in answer.data.decode()
    assert store.controls.paused(["crm"]) == {}


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_an_unknown_destination_is_a_404_naming_it(controlled, store, action):
    answer = controlled.post(
        f"/ui/destinations/nope/{action}", data={"csrf_token": page_csrf(controlled)}
    )
    assert answer.status_code == 404
    assert b"no destination &#39;nope&#39; in the rules" in answer.data
    assert store.controls.paused(["nope"]) == {}


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_and_resume_need_the_csrf_token(controlled, store, action):
    store.controls.pause("trace")
    park(store, "trace")
    path = "/ui/destinations/crm/pause" if action == "pause" else "/ui/destinations/trace/resume"
    missing = controlled.post(path, data={"for": "1h"})
    assert missing.status_code == 400 and b"CSRF token missing" in missing.data
    wrong = controlled.post(path, data={"for": "1h", "csrf_token": "forged"})
    assert wrong.status_code == 403 and b"CSRF token wrong" in wrong.data
    assert list(store.controls.paused(["crm", "trace"])) == ["trace"]
    assert store.client.scard("relay:dest:trace:parked") == 1


def test_a_notice_is_shown_only_when_the_console_signed_it_and_not_for_long(
    controlled, console_env
):
    settings = load_settings(console_env)
    other = load_settings({**console_env, "RELAY_ADMIN_TOKEN": "another-admin-token"})
    genuine = sessions.seal(settings, "crm resumed: 7 waiting deliveries sent again.")
    assert b"7 waiting deliveries" in controlled.get(f"/ui/?done={genuine}").data
    for forged in (
        "crm resumed: 7 waiting deliveries sent again.",
        sessions.seal(other, "crm resumed: 7 waiting deliveries sent again."),
    ):
        page = controlled.get("/ui/", query_string={"done": forged}).data
        assert b"waiting deliveries" not in page and b"notice-ok" not in page
    assert sessions.unseal(settings, genuine, NOTICE_MAX_AGE) is not None
    assert sessions.unseal(settings, genuine, -1) is None  # older than allowed
