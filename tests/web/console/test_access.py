"""Who may use the console (/ui) and the API: tokens, the session cookie, CSRF, viewers.

Flask's test client against the suite's real Redis; the browser tests
(test_browser.py) check the same rules through Chromium.
"""

from __future__ import annotations

import time

import pytest
from itsdangerous import SignatureExpired, URLSafeTimedSerializer

from relay.errors import SettingsError
from relay.settings import load_settings
from relay.state.keys import deliver_member
from relay.web.app import create_app
from relay.web.console import session as sessions
from tests.web.console.conftest import ADMIN, VIEWER, csrf_of, login, seed_dead_letter

UI_REQUESTS = [
    ("GET", "/ui/"),
    ("GET", "/ui"),
    ("GET", "/ui/login"),
    ("POST", "/ui/login"),
    ("GET", "/ui/static/console.css"),
    ("GET", "/ui/events"),
    ("GET", "/ui/events/01EVENT"),
    ("GET", "/ui/dead-letters"),
    ("POST", "/ui/dead-letters/01EVENT:trace/replay"),
    ("POST", "/ui/dead-letters/bulk"),
    ("GET", "/ui/rules"),
    ("POST", "/ui/rules/diff"),
    ("POST", "/ui/destinations/trace/pause"),
    ("POST", "/ui/destinations/trace/resume"),
    ("GET", "/ui/no-such-page"),
]


@pytest.mark.parametrize(("method", "path"), UI_REQUESTS)
def test_without_an_admin_token_every_console_path_is_404(client, store, method, path):
    seed_dead_letter(store)
    answer = client.open(path, method=method, data={"token": "", "csrf_token": "x"})
    assert answer.status_code == 404
    assert store.dead_letters.ids() == ["01EVENT:trace"]
    assert store.controls.paused(["trace"]) == {}


@pytest.mark.parametrize("path", ["/ui/", "/ui/events?state=dead", "/ui/rules", "/ui/nope"])
def test_pages_send_whoever_is_not_logged_in_to_the_login_page(console, path):
    answer = console.get(path)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/ui/login?next=")


def test_a_post_without_a_login_is_refused_401(console, store):
    seed_dead_letter(store)
    csrf = csrf_of(console.get("/ui/login").data)  # an anonymous session's token
    answer = console.post("/ui/dead-letters/01EVENT:trace/replay", data={"csrf_token": csrf})
    assert answer.status_code == 401
    assert b"Log in to the console first" in answer.data
    assert store.dead_letters.ids() == ["01EVENT:trace"]


def test_login_sets_a_signed_http_only_strict_cookie_with_an_expiry(console):
    form = console.get("/ui/login")
    answer = console.post("/ui/login", data={"token": ADMIN, "csrf_token": csrf_of(form.data)})
    assert answer.status_code == 302 and answer.headers["Location"] == "/ui/"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=")
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/ui", f"Max-Age={sessions.SESSION_TTL}"):
        assert flag in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert ADMIN not in cookie
    assert console.get("/ui/").status_code == 200


def test_over_https_the_cookie_is_secure(console_app):
    client = console_app.test_client()
    form = client.get("/ui/login", base_url="https://relay.example")
    assert "Secure" in form.headers["Set-Cookie"]
    answer = client.post(
        "/ui/login",
        data={"token": ADMIN, "csrf_token": csrf_of(form.data)},
        base_url="https://relay.example",
    )
    assert answer.status_code == 302
    assert "; Secure" in answer.headers["Set-Cookie"]


def test_a_forwarded_proto_header_is_not_trusted_by_the_app_itself(console):
    form = console.get("/ui/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in form.headers["Set-Cookie"]


@pytest.mark.parametrize("token", ["", "wrong", ADMIN + "x", ADMIN[:-1], "ünïcode"])
def test_a_wrong_token_is_refused_and_logs_nobody_in(console, token):
    form = console.get("/ui/login")
    answer = console.post("/ui/login", data={"token": token, "csrf_token": csrf_of(form.data)})
    assert answer.status_code == 401
    assert b"Wrong token." in answer.data
    assert console.get("/ui/").status_code == 302


def test_login_needs_the_login_page_csrf_token(console):
    console.get("/ui/login")
    missing = console.post("/ui/login", data={"token": ADMIN})
    assert missing.status_code == 400 and b"CSRF token missing" in missing.data
    wrong = console.post("/ui/login", data={"token": ADMIN, "csrf_token": "forged"})
    assert wrong.status_code == 403 and b"CSRF token wrong" in wrong.data
    assert console.get("/ui/").status_code == 302


def test_a_login_post_without_a_session_is_refused(console):
    answer = console.post("/ui/login", data={"token": ADMIN, "csrf_token": "anything"})
    assert answer.status_code == 400
    assert b"No console session" in answer.data


def test_login_goes_back_to_the_page_asked_for_but_never_elsewhere(console):
    form = console.get("/ui/login")
    csrf = csrf_of(form.data)
    home = console.post(
        "/ui/login", data={"token": ADMIN, "csrf_token": csrf, "next": "https://evil.example/"}
    )
    assert home.headers["Location"] == "/ui/"
    csrf = csrf_of(console.get("/ui/login").data)
    back = console.post(
        "/ui/login", data={"token": ADMIN, "csrf_token": csrf, "next": "/ui/events?state=dead"}
    )
    assert back.headers["Location"] == "/ui/events?state=dead"
    for odd in ("/ui/\r\nSet-Cookie: x=1", "/ui/\tx"):  # no header could carry it: home
        csrf = csrf_of(console.get("/ui/login").data)
        home = console.post("/ui/login", data={"token": ADMIN, "csrf_token": csrf, "next": odd})
        assert home.status_code == 302 and home.headers["Location"] == "/ui/"


def test_login_gives_a_new_csrf_token(console):
    before = csrf_of(console.get("/ui/login").data)
    after = login(console)
    assert before != after


def test_every_post_needs_the_session_csrf_token(console, store):
    seed_dead_letter(store)
    csrf = login(console)
    path = "/ui/dead-letters/01EVENT:trace/replay"
    missing = console.post(path)
    assert missing.status_code == 400 and b"CSRF token missing" in missing.data
    wrong = console.post(path, data={"csrf_token": csrf[:-2] + "xx"})
    assert wrong.status_code == 403 and b"CSRF token wrong" in wrong.data
    header_wrong = console.post(path, headers={"X-CSRF-Token": "nope"})
    assert header_wrong.status_code == 403
    assert store.dead_letters.ids() == ["01EVENT:trace"]
    done = console.post(path, data={"csrf_token": csrf})
    assert done.status_code == 303
    assert store.dead_letters.ids() == []


def test_the_csrf_token_of_another_session_is_wrong(console_app, store):
    seed_dead_letter(store)
    mine, theirs = console_app.test_client(), console_app.test_client()
    login(mine)
    their_csrf = login(theirs)
    answer = mine.post("/ui/dead-letters/01EVENT:trace/replay", data={"csrf_token": their_csrf})
    assert answer.status_code == 403
    assert store.dead_letters.ids() == ["01EVENT:trace"]


def test_logout_ends_the_session_in_the_browser(console):
    csrf = login(console)
    answer = console.post("/ui/logout", data={"csrf_token": csrf})
    assert answer.status_code == 302
    assert f"{sessions.COOKIE}=;" in answer.headers["Set-Cookie"]
    assert console.get("/ui/").status_code == 302


def test_a_tampered_cookie_is_no_session(console):
    login(console)
    cookie = console.get_cookie(sessions.COOKIE, path="/ui")
    value = cookie.value
    console.set_cookie(
        sessions.COOKIE, value[:-3] + ("A" if value[-3] != "A" else "B") + value[-2:], path="/ui"
    )
    assert console.get("/ui/").status_code == 302


def test_a_cookie_signed_with_another_key_is_no_session(console, console_env):
    forged = URLSafeTimedSerializer(b"guessed", salt="relay.console.session").dumps(
        {"role": "admin", "csrf": "x", "token": "y"}
    )
    console.set_cookie(sessions.COOKIE, forged, path="/ui")
    assert console.get("/ui/").status_code == 302


def signed_at(settings, data: dict, stamp: int) -> str:
    """A session cookie for ``data`` as the console signs it, dated ``stamp`` (epoch s)."""
    fresh = sessions._serializer(settings)

    class Dated(URLSafeTimedSerializer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

            class Signer(self.signer):
                def get_timestamp(self):
                    return stamp

            self.signer = Signer

    return Dated(fresh.secret_key, salt=fresh.salt).dumps(data)


def test_a_session_older_than_its_lifetime_is_refused(console, console_env):
    settings = load_settings(console_env)
    data = {"role": "admin", "csrf": "c", "token": sessions._token_mark(settings, "admin")}
    old = signed_at(settings, data, int(time.time()) - sessions.SESSION_TTL - 5)
    console.set_cookie(sessions.COOKIE, sessions._serializer(settings).dumps(data), path="/ui")
    assert console.get("/ui/").status_code == 200  # the same session, made now, is good
    console.set_cookie(sessions.COOKIE, old, path="/ui")
    assert console.get("/ui/").status_code == 302


def test_visiting_the_login_page_does_not_make_a_login_last_longer(console, console_env):
    settings = load_settings(console_env)
    stamp = int(time.time()) - sessions.SESSION_TTL + 60  # a login that ends in a minute
    fresh = sessions._serializer(settings)
    data = {"role": "admin", "csrf": "c", "token": sessions._token_mark(settings, "admin")}
    console.set_cookie(sessions.COOKIE, signed_at(settings, data, stamp), path="/ui")
    assert console.get("/ui/login").status_code == 200
    assert console.get("/ui/").status_code == 200  # still logged in, for that minute
    kept = console.get_cookie(sessions.COOKIE, path="/ui").value
    assert fresh.loads(kept, max_age=sessions.SESSION_TTL) == data
    with pytest.raises(SignatureExpired):  # dated as the login was, not as the visit
        fresh.loads(kept, max_age=sessions.SESSION_TTL - 120)


def test_rotating_the_admin_token_logs_everyone_out(console_env, redis_server):
    first = create_app(load_settings(console_env)).test_client()
    login(first)
    login(viewer := create_app(load_settings(console_env)).test_client(), VIEWER)
    rotated = create_app(load_settings({**console_env, "RELAY_ADMIN_TOKEN": "rotated-admin-token"}))
    for client in (first, viewer):
        again = rotated.test_client()
        again.set_cookie(
            sessions.COOKIE, client.get_cookie(sessions.COOKIE, path="/ui").value, path="/ui"
        )
        assert again.get("/ui/").status_code == 302


def test_rotating_the_viewer_token_logs_the_viewers_out_only(console_env):
    admin = create_app(load_settings(console_env)).test_client()
    viewer = create_app(load_settings(console_env)).test_client()
    login(admin)
    login(viewer, VIEWER)
    rotated = create_app(
        load_settings({**console_env, "RELAY_VIEWER_TOKEN": "rotated-viewer-token"})
    )
    unset = create_app(load_settings({**console_env, "RELAY_VIEWER_TOKEN": ""}))
    for app in (rotated, unset):
        for client, expected in ((admin, 200), (viewer, 302)):
            again = app.test_client()
            cookie = client.get_cookie(sessions.COOKIE, path="/ui").value
            again.set_cookie(sessions.COOKIE, cookie, path="/ui")
            assert again.get("/ui/").status_code == expected


def test_console_pages_forbid_outside_scripts_and_framing(console):
    login(console)
    answer = console.get("/ui/")
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"


# -- the viewer token ------------------------------------------------------------------------


def test_a_viewer_sees_every_page_without_the_buttons_that_change_state(console, store):
    seed_dead_letter(store)
    login(console, VIEWER)
    for path in ("/ui/", "/ui/events", "/ui/dead-letters", "/ui/rules"):
        answer = console.get(path)
        assert answer.status_code == 200, path
        assert b"viewer (read-only)" in answer.data
    page = console.get("/ui/dead-letters").data
    assert b"01EVENT:trace" in page
    assert b"Replay selected" not in page and b'name="ids"' not in page
    store.controls.pause("trace")
    overview = console.get("/ui/").data
    assert b'data-destination="trace" data-state="paused"' in overview
    assert b"/ui/destinations/" not in overview and b"Pause / resume" not in overview


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/ui/dead-letters/01EVENT:trace/replay", {}),
        ("/ui/dead-letters/bulk", {"action": "replay", "ids": "01EVENT:trace", "confirm": "1"}),
        ("/ui/dead-letters/bulk", {"action": "delete", "ids": "01EVENT:trace", "confirm": "1"}),
        ("/ui/dead-letters/bulk", {"action": "replay", "scope": "matching", "confirm": "1"}),
        ("/ui/events/01EVENT/reroute", {}),
        ("/ui/destinations/trace/pause", {"for": "1h"}),
        ("/ui/destinations/failures-webhook/resume", {}),
    ],
)
def test_a_viewer_cannot_change_anything_even_by_posting_directly(console, store, path, form):
    seed_dead_letter(store)
    store.controls.pause("failures-webhook")  # with a delivery parked: resume would send it
    did = "01EVENT:failures-webhook"
    assert store.controls.gate("failures-webhook", did, 5).reason == "paused"
    parked = deliver_member(did)  # how the parked set holds it
    csrf = login(console, VIEWER)
    answer = console.post(path, data={**form, "csrf_token": csrf})
    assert answer.status_code == 403
    assert b"A viewer cannot" in answer.data
    assert store.dead_letters.ids() == ["01EVENT:trace"]
    assert store.history("01EVENT") == []
    assert list(store.controls.paused(["trace", "failures-webhook"])) == ["failures-webhook"]
    assert store.client.smembers("relay:dest:failures-webhook:parked") == {parked}


def test_a_viewer_may_try_rules_in_the_playground(console):
    csrf = login(console, VIEWER)
    answer = console.post(
        "/ui/rules/playground",
        data={"csrf_token": csrf, "payload": '{"oa": "447700900123", "da": "1", "message": "hi"}'},
    )
    assert answer.status_code == 200
    assert b"routes matched: inbound" in answer.data


def test_the_api_takes_the_viewer_token_for_reading_only(console_env, store):
    api = create_app(load_settings(console_env)).test_client()
    seed_dead_letter(store)
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    listed = api.get("/api/dead-letters", headers=viewer)
    assert listed.status_code == 200 and listed.json["total"] == 1
    for method, path in [
        ("POST", "/api/dead-letters/01EVENT:trace/replay"),
        ("DELETE", "/api/dead-letters/01EVENT:trace"),
        ("DELETE", "/api/dead-letters"),
        ("POST", "/api/rules/test"),
    ]:
        answer = api.open(path, method=method, headers=viewer, json={})
        assert answer.status_code == 403, path
        assert answer.json["error"] == "forbidden"
        assert "RELAY_VIEWER_TOKEN is read-only" in answer.json["detail"]
    assert store.dead_letters.ids() == ["01EVENT:trace"]
    assert api.get("/api/dead-letters", headers={"Authorization": "Bearer nope"}).status_code == 401


SAME = "one-token-for-both-roles"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"RELAY_VIEWER_TOKEN": "v"}, "set, but RELAY_ADMIN_TOKEN is not"),
        ({"RELAY_VIEWER_TOKEN": SAME, "RELAY_ADMIN_TOKEN": SAME}, "the same as"),
    ],
)
def test_a_viewer_token_that_makes_no_sense_is_one_line_naming_it(env, problem):
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.variable == "RELAY_VIEWER_TOKEN"
    assert problem in str(caught.value)
    assert SAME not in str(caught.value)
