"""Callback authentication: hub signature, HTTP Basic, API key, and refusing to run without.

Every configured method must pass; failures are 401, counted and logged without the body
or any secret. GET/HEAD stay open for Webex Connect's URL check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import subprocess
import sys

import pytest
from click.testing import CliRunner

from relay import cli
from relay.errors import SettingsError
from relay.settings import load_settings
from relay.web import auth
from relay.web.app import AUTH, create_app
from tests.conftest import load_fixture
from tests.harness import ROOT, relay_env

URL = "/webhooks/webex-connect"
SECRET = "hub-s3cret-value"
PASSWORD = "pa55-w0rd-value"
API_KEY = "api-k3y-value"
BODY = json.dumps(load_fixture("receipt-delivered.json"), separators=(",", ":")).encode()


def sign(body: bytes, secret: str = SECRET, algorithm=hashlib.sha256) -> str:
    return hmac.new(secret.encode(), body, algorithm).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def make_app(redis_server):
    def make(**env: str):
        return create_app(load_settings(relay_env(redis_server.url, **env)))

    return make


@pytest.fixture
def hub(make_app):
    return make_app(RELAY_WEBEX_HUB_SECRET=SECRET)


def post(app, body: bytes = BODY, headers: dict | None = None, path: str = URL):
    return app.test_client().post(
        path, data=body, headers=headers or {}, content_type="application/json"
    )


def queued(redis_client) -> int:
    return redis_client.llen("relay:inbox")


# -- hub signature ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        sign(BODY),
        sign(BODY).upper(),
        "sha256=" + sign(BODY),
        "SHA256=" + sign(BODY),
        "sha1=" + sign(BODY),  # the prefix is only stripped; the digest decides
        sign(BODY, algorithm=hashlib.sha512),
        "sha512=" + sign(BODY, algorithm=hashlib.sha512),
        f"  {sign(BODY)} ",
    ],
)
def test_valid_hub_signature_is_accepted(hub, header):
    answer = post(hub, headers={"x-hub-signature": header})
    assert answer.status_code == 200, answer.json


@pytest.mark.parametrize("name", ["X-Hub-Signature", "X-HUB-SIGNATURE", "x-hub-signature"])
def test_signature_header_name_is_case_insensitive(hub, name):
    assert post(hub, headers={name: sign(BODY)}).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        sign(BODY, secret="another secret"),
        sign(BODY + b" "),
        sign(BODY)[:-1],
        sign(BODY) + "0",
        "sha256=",
        "sha256=" + "z" * 64,
        hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest(),  # SHA-1 is not accepted
        "sha256=" + sign(BODY) + "," + sign(BODY),
        "é" * 64,
    ],
)
def test_missing_or_wrong_hub_signature_is_401_and_nothing_is_queued(hub, redis_client, header):
    headers = {} if header is None else {"x-hub-signature": header}
    answer = post(hub, headers=headers)
    assert answer.status_code == 401
    assert answer.json == {"error": "invalid_signature"}
    assert "WWW-Authenticate" not in answer.headers
    assert queued(redis_client) == 0


@pytest.mark.parametrize(
    ("algorithm", "digest", "status"),
    [
        ("sha256", hashlib.sha256, 200),
        ("sha256", hashlib.sha512, 401),
        ("sha512", hashlib.sha512, 200),
        ("sha512", hashlib.sha256, 401),
    ],
)
def test_a_fixed_algorithm_accepts_only_its_digest(make_app, algorithm, digest, status):
    app = make_app(RELAY_WEBEX_HUB_SECRET=SECRET, RELAY_WEBEX_HUB_ALGORITHM=algorithm)
    answer = post(app, headers={"x-hub-signature": "sha256=" + sign(BODY, algorithm=digest)})
    assert answer.status_code == status


def test_signature_is_over_the_raw_bytes_not_the_parsed_json(hub):
    spaced = json.dumps(json.loads(BODY), indent=3).encode()
    assert post(hub, spaced, {"x-hub-signature": sign(spaced)}).status_code == 200
    assert post(hub, spaced, {"x-hub-signature": sign(BODY)}).status_code == 401


def test_signature_is_checked_before_the_body_is_parsed(hub):
    garbage = b'{"not json'
    assert post(hub, garbage, {"x-hub-signature": "0" * 64}).json == {"error": "invalid_signature"}
    answer = post(hub, garbage, {"x-hub-signature": sign(garbage)})
    assert answer.status_code == 400 and answer.json["error"] == "invalid_payload"


def test_signature_is_checked_before_the_content_type_and_source(hub):
    answer = hub.test_client().post(URL + "/bad%20source", data=BODY, content_type="text/plain")
    assert answer.status_code == 401


def test_signature_comparison_is_constant_time(hub, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert post(hub, headers={"x-hub-signature": "ab" * 32}).status_code == 401
    assert post(hub, headers={"x-hub-signature": sign(BODY)}).status_code == 200
    assert len(calls) == 2


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", [URL, URL + "/eu"])
def test_url_check_stays_open_with_every_method_configured(make_app, method, path):
    app = make_app(
        RELAY_WEBEX_HUB_SECRET=SECRET,
        RELAY_INGEST_BASIC_AUTH=f"webex:{PASSWORD}",
        RELAY_INGEST_API_KEY_HEADER="X-Relay-Key",
        RELAY_INGEST_API_KEY=API_KEY,
    )
    assert app.test_client().open(path, method=method).status_code == 200


def test_failures_are_counted_by_kind(make_app):
    app = make_app(RELAY_WEBEX_HUB_SECRET=SECRET, RELAY_INGEST_BASIC_AUTH=f"webex:{PASSWORD}")
    good_basic = {"Authorization": basic("webex", PASSWORD)}
    post(app)
    post(app, headers=good_basic)
    post(app, headers={**good_basic, "x-hub-signature": "0" * 64})
    post(app, headers={**good_basic, "x-hub-signature": sign(BODY)})
    assert app.extensions[AUTH].failures == {"unauthorized": 1, "invalid_signature": 2}


# -- HTTP Basic ---------------------------------------------------------------------------


@pytest.fixture
def basic_app(make_app):
    return make_app(RELAY_INGEST_BASIC_AUTH=f"webex:{PASSWORD}")


@pytest.mark.parametrize(
    "header",
    [
        basic("webex", PASSWORD),
        "basic " + basic("webex", PASSWORD).split()[1],
        "BASIC  " + basic("webex", PASSWORD).split()[1],
    ],
)
def test_right_basic_credentials_are_accepted(basic_app, header):
    assert post(basic_app, headers={"Authorization": header}).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        basic("webex", "wrong"),
        basic("other", PASSWORD),
        basic("webex", PASSWORD + "x"),
        basic("webex", PASSWORD)[:-2],
        "Basic !!!not-base64!!!",
        "Basic",
        "Bearer " + PASSWORD,
        f"Basic webex:{PASSWORD}",  # not encoded
    ],
)
def test_wrong_basic_credentials_are_401_with_a_challenge(basic_app, redis_client, header):
    headers = {} if header is None else {"Authorization": header}
    answer = post(basic_app, headers=headers)
    assert answer.status_code == 401
    assert answer.json == {"error": "unauthorized"}
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="relay"'
    assert queued(redis_client) == 0


def test_a_non_ascii_basic_password_works(make_app):
    app = make_app(RELAY_INGEST_BASIC_AUTH="webex:pässwörd")
    token = base64.b64encode("webex:pässwörd".encode()).decode()
    assert post(app, headers={"Authorization": f"Basic {token}"}).status_code == 200


# -- API key ------------------------------------------------------------------------------


@pytest.fixture
def key_app(make_app):
    return make_app(RELAY_INGEST_API_KEY_HEADER="X-Relay-Key", RELAY_INGEST_API_KEY=API_KEY)


@pytest.mark.parametrize("name", ["X-Relay-Key", "x-relay-key"])
def test_right_api_key_is_accepted(key_app, name):
    assert post(key_app, headers={name: API_KEY}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Relay-Key": ""}, {"X-Relay-Key": API_KEY + "x"}, {"X-Other-Key": API_KEY}],
)
def test_wrong_api_key_is_401_without_a_basic_challenge(key_app, headers):
    answer = post(key_app, headers=headers)
    assert answer.status_code == 401
    assert answer.json == {"error": "unauthorized"}
    assert "WWW-Authenticate" not in answer.headers


# -- several methods ----------------------------------------------------------------------


@pytest.fixture
def all_app(make_app):
    return make_app(
        RELAY_WEBEX_HUB_SECRET=SECRET,
        RELAY_INGEST_BASIC_AUTH=f"webex:{PASSWORD}",
        RELAY_INGEST_API_KEY_HEADER="X-Relay-Key",
        RELAY_INGEST_API_KEY=API_KEY,
    )


GOOD = {
    "Authorization": basic("webex", PASSWORD),
    "X-Relay-Key": API_KEY,
    "x-hub-signature": sign(BODY),
}


def test_with_several_methods_configured_all_must_pass(all_app):
    assert post(all_app, headers=GOOD).status_code == 200


@pytest.mark.parametrize(
    ("missing", "error"),
    [
        ("Authorization", "unauthorized"),
        ("X-Relay-Key", "unauthorized"),
        ("x-hub-signature", "invalid_signature"),
    ],
)
def test_with_several_methods_configured_each_one_is_required(all_app, missing, error):
    headers = {name: value for name, value in GOOD.items() if name != missing}
    answer = post(all_app, headers=headers)
    assert answer.status_code == 401
    assert answer.json == {"error": error}


# -- secrets stay secret ------------------------------------------------------------------


def test_refusals_are_logged_without_body_or_secrets(all_app, caplog):
    caplog.set_level(logging.DEBUG)
    body = b'{"oa": "447700900123", "da": "12345", "message": "private text"}'
    wrong = {
        "Authorization": basic("webex", "guess-" + PASSWORD),
        "X-Relay-Key": "guess-" + API_KEY,
        "x-hub-signature": sign(body, secret="guess"),
    }
    for headers in (wrong, {**wrong, **{k: GOOD[k] for k in ("Authorization", "X-Relay-Key")}}):
        answer = post(all_app, body, headers)
        assert answer.status_code == 401
        for secret in (SECRET, PASSWORD, API_KEY):
            assert secret not in answer.get_data(as_text=True)
    refusals = [r.getMessage() for r in caplog.records if r.name == "relay.ingest.auth"]
    assert len(refusals) == 2
    assert "unauthorized" in refusals[0] and "invalid_signature" in refusals[1]
    text = caplog.text
    for secret in (SECRET, PASSWORD, API_KEY, "private text", "447700900123"):
        assert secret not in text


def test_new_secrets_are_not_in_the_settings_repr():
    settings = load_settings(
        {
            "RELAY_WEBEX_HUB_SECRET": SECRET,
            "RELAY_INGEST_BASIC_AUTH": f"webex:{PASSWORD}",
            "RELAY_INGEST_API_KEY_HEADER": "X-Relay-Key",
            "RELAY_INGEST_API_KEY": API_KEY,
        }
    )
    for secret in (SECRET, PASSWORD, API_KEY):
        assert secret not in repr(settings)


# -- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({"RELAY_INGEST_API_KEY_HEADER": "X-Key"}, "RELAY_INGEST_API_KEY", "not set"),
        ({"RELAY_INGEST_API_KEY": API_KEY}, "RELAY_INGEST_API_KEY_HEADER", "not set"),
        (
            {"RELAY_INGEST_API_KEY_HEADER": "X Key", "RELAY_INGEST_API_KEY": API_KEY},
            "RELAY_INGEST_API_KEY_HEADER",
            "not a valid HTTP header name",
        ),
        (
            {
                "RELAY_INGEST_BASIC_AUTH": f"webex:{PASSWORD}",
                "RELAY_INGEST_API_KEY_HEADER": "authorization",
                "RELAY_INGEST_API_KEY": API_KEY,
            },
            "RELAY_INGEST_API_KEY_HEADER",
            "RELAY_INGEST_BASIC_AUTH",
        ),
        (
            {
                "RELAY_WEBEX_HUB_SECRET": SECRET,
                "RELAY_INGEST_API_KEY_HEADER": "X-Hub-Signature",
                "RELAY_INGEST_API_KEY": API_KEY,
            },
            "RELAY_INGEST_API_KEY_HEADER",
            "RELAY_WEBEX_HUB_SECRET",
        ),
        ({"RELAY_INGEST_BASIC_AUTH": PASSWORD}, "RELAY_INGEST_BASIC_AUTH", "user:password"),
        ({"RELAY_INGEST_BASIC_AUTH": f":{PASSWORD}"}, "RELAY_INGEST_BASIC_AUTH", "user:password"),
        ({"RELAY_INGEST_BASIC_AUTH": "webex:"}, "RELAY_INGEST_BASIC_AUTH", "user:password"),
        (
            {"RELAY_INGEST_BASIC_AUTH": f"webex:{PASSWORD}\x01"},
            "RELAY_INGEST_BASIC_AUTH",
            "control characters",
        ),
        ({"RELAY_REQUIRE_AUTH": "maybe"}, "RELAY_REQUIRE_AUTH", "not one of"),
        ({"RELAY_WEBEX_HUB_ALGORITHM": "sha1"}, "RELAY_WEBEX_HUB_ALGORITHM", "not one of"),
    ],
)
def test_bad_auth_settings_name_the_variable_and_hide_the_value(env, variable, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.variable == variable
    assert message in caught.value.message
    for secret in (SECRET, PASSWORD, API_KEY):
        assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)]
)
def test_require_auth_is_a_flag(value, expected):
    assert load_settings({"RELAY_REQUIRE_AUTH": value}).require_auth is expected


def test_the_app_refuses_to_start_when_auth_is_required_and_none_is_set(make_app):
    with pytest.raises(SettingsError) as caught:
        make_app(RELAY_REQUIRE_AUTH="1")
    assert caught.value.variable == "RELAY_REQUIRE_AUTH"
    for name in auth.AUTH_VARIABLES:
        assert name in caught.value.message


@pytest.mark.parametrize(
    "env",
    [
        {"RELAY_WEBEX_HUB_SECRET": SECRET},
        {"RELAY_INGEST_BASIC_AUTH": f"webex:{PASSWORD}"},
        {"RELAY_INGEST_API_KEY_HEADER": "X-Relay-Key", "RELAY_INGEST_API_KEY": API_KEY},
    ],
)
def test_any_one_method_satisfies_require_auth(make_app, env):
    app = make_app(RELAY_REQUIRE_AUTH="1", **env)
    assert post(app).status_code == 401


def test_wsgi_entry_point_refuses_with_one_line_and_exit_2(redis_server):
    env = relay_env(redis_server.url, RELAY_REQUIRE_AUTH="1")
    done = subprocess.run(
        [sys.executable, "-c", "import relay.web.wsgi"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("relay: RELAY_REQUIRE_AUTH: ")
    assert "RELAY_WEBEX_HUB_SECRET" in lines[0]


# -- relay up / relay web -----------------------------------------------------------------


@pytest.fixture
def no_exec(monkeypatch):
    """``relay web`` execs gunicorn and ``relay up`` binds a port: stop both right there."""
    calls = []

    def stop(*args):
        calls.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execv", stop)
    monkeypatch.setattr(cli, "_check_port_free", stop)
    return calls


def run_cli(args: list[str], redis_server, **env: str):
    full = relay_env(redis_server.url, **env)
    return CliRunner().invoke(cli.main, args, env=full, catch_exceptions=False)


def auth_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "not authenticated" in line]


@pytest.mark.parametrize("command", ["web", "up"])
def test_unauthenticated_start_warns_once(redis_server, no_exec, monkeypatch, command):
    for name in auth.AUTH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    result = run_cli([command], redis_server)
    assert result.exit_code == 0
    assert no_exec, "the command went on to start"
    (line,) = auth_lines(result.stderr)
    assert line.startswith("relay: warning: webhook callbacks are not authenticated")
    assert "RELAY_REQUIRE_AUTH" in line


@pytest.mark.parametrize("command", ["web", "up"])
def test_authenticated_start_does_not_warn(redis_server, no_exec, command):
    result = run_cli([command], redis_server, RELAY_WEBEX_HUB_SECRET=SECRET)
    assert result.exit_code == 0 and no_exec
    assert auth_lines(result.stderr) == []
    assert SECRET not in result.output + result.stderr


@pytest.mark.parametrize("command", ["web", "up"])
def test_required_auth_refuses_to_start_with_one_line(redis_server, no_exec, command):
    result = run_cli([command], redis_server, RELAY_REQUIRE_AUTH="1")
    assert result.exit_code == 2
    assert no_exec == []
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("relay: RELAY_REQUIRE_AUTH: set, but none of")


# -- safe by default: no method, no start (unless allowed) ---------------------------------

NO_AUTH = {"RELAY_ALLOW_UNAUTHENTICATED": "0"}


def assert_refusal(line: str) -> None:
    assert line.startswith("relay: RELAY_ALLOW_UNAUTHENTICATED: not set, and none of ")
    for name in (*auth.AUTH_VARIABLES, "RELAY_INGEST_API_KEY_HEADER"):
        assert name in line


def test_the_app_refuses_to_start_without_an_authentication_method(make_app):
    with pytest.raises(SettingsError) as caught:
        make_app(**NO_AUTH)
    assert caught.value.variable == "RELAY_ALLOW_UNAUTHENTICATED"
    assert_refusal(f"relay: {caught.value}")


@pytest.mark.parametrize(
    "env",
    [
        {"RELAY_ALLOW_UNAUTHENTICATED": "1"},
        {**NO_AUTH, "RELAY_WEBEX_HUB_SECRET": SECRET},
        {**NO_AUTH, "RELAY_INGEST_BASIC_AUTH": f"webex:{PASSWORD}"},
        {**NO_AUTH, "RELAY_INGEST_API_KEY_HEADER": "X-Relay-Key", "RELAY_INGEST_API_KEY": API_KEY},
    ],
)
def test_an_authentication_method_or_the_allowance_lets_the_app_start(make_app, env):
    allowed = env.get("RELAY_ALLOW_UNAUTHENTICATED") == "1"
    assert post(make_app(**env)).status_code == (200 if allowed else 401)


def test_require_auth_wins_over_the_allowance(make_app):
    with pytest.raises(SettingsError) as caught:
        make_app(RELAY_REQUIRE_AUTH="1", RELAY_ALLOW_UNAUTHENTICATED="1")
    assert caught.value.variable == "RELAY_REQUIRE_AUTH"


def test_the_procfile_web_process_refuses_without_auth_with_one_line_and_exit_2(redis_server):
    """``gunicorn relay.web.wsgi:app -c python:relay.web.gunicorn_conf``, as the Procfile."""
    env = relay_env(redis_server.url, **NO_AUTH)
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "relay.web.wsgi:app"]
        + ["-c", "python:relay.web.gunicorn_conf", "--bind", "127.0.0.1:0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert_refusal(line)


def test_relay_web_refuses_without_auth_with_one_line(redis_server, no_exec):
    result = run_cli(["web"], redis_server, **NO_AUTH)
    assert result.exit_code == 2
    assert no_exec == []
    (line,) = result.stderr.strip().splitlines()
    assert_refusal(line)


def test_relay_up_on_a_public_address_refuses_without_auth(redis_server, no_exec):
    result = run_cli(["up", "--host", "0.0.0.0"], redis_server, **NO_AUTH)
    assert result.exit_code == 2
    assert no_exec == []
    (line,) = result.stderr.strip().splitlines()
    assert_refusal(line)


class FakeSupervisor:
    """Records the children ``relay up`` would start, and stops it there."""

    started: list = []

    def __init__(self, children, services=()):
        self.children = children
        self.stopping = False

    def install_signal_handlers(self):
        pass

    def start(self):
        FakeSupervisor.started = self.children
        raise SystemExit(0)

    def stop(self):
        pass


@pytest.fixture
def fake_supervisor(monkeypatch):
    monkeypatch.setattr(cli, "_check_port_free", lambda host, port: None)
    monkeypatch.setattr(cli, "Supervisor", FakeSupervisor)
    FakeSupervisor.started = []
    return FakeSupervisor


SMS_RULES = """\
version: 1
destinations:
  help-reply: {type: sms_reply, text: "Reply STOP to opt out."}
routes:
  - {name: help, match: {kind: inbound_message, keyword: HELP}, to: [help-reply]}
"""


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"])
def test_relay_up_on_loopback_starts_without_auth_and_tells_its_children(
    redis_server, fake_supervisor, tmp_path, host
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(SMS_RULES)  # sms_reply loads too: the allowance is implied
    result = run_cli(
        ["up", "--host", host, "--rules", str(rules)],
        redis_server,
        RELAY_WEBEX_SERVICE_KEY="k",
        **NO_AUTH,
    )
    assert result.exit_code == 0, result.stderr
    (line,) = auth_lines(result.stderr)
    assert line.startswith("relay: warning: webhook callbacks are not authenticated")
    names = [child.name for child in fake_supervisor.started]
    assert names == ["web", "worker"]
    for child in fake_supervisor.started:
        assert child.env["RELAY_ALLOW_UNAUTHENTICATED"] == "1"


def test_relay_up_on_a_public_address_starts_when_allowed_with_the_warning(
    redis_server, fake_supervisor
):
    result = run_cli(["up", "--host", "0.0.0.0"], redis_server, RELAY_ALLOW_UNAUTHENTICATED="1")
    assert result.exit_code == 0, result.stderr
    assert len(auth_lines(result.stderr)) == 1
    assert [child.name for child in fake_supervisor.started] == ["web", "worker"]


def test_relay_up_with_auth_does_not_pass_the_allowance_on(redis_server, fake_supervisor):
    result = run_cli(["up"], redis_server, RELAY_WEBEX_HUB_SECRET=SECRET, **NO_AUTH)
    assert result.exit_code == 0, result.stderr
    for child in fake_supervisor.started:
        assert child.env.get("RELAY_ALLOW_UNAUTHENTICATED") == "0"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("relay.internal", False),
    ],
)
def test_which_addresses_are_loopback(host, loopback):
    assert cli.is_loopback(host) is loopback
