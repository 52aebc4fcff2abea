"""Where an http destination's OAuth2 client secret, its tokens and its TLS key must never
show: a real worker's log and the dead letters it writes, the dry run (``relay rules
test``, the console's playground), the console's Rules page. The secrets are written in
the rules file itself (not taken from the environment, whose values are masked anyway)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.actions import close_session
from relay.actions.oauth2 import TOKENS
from relay.ops.dryrun import dry_run
from relay.rules import load_rules
from relay.settings import load_settings
from relay.web.app import create_app
from tests.actions.oauth2_endpoint import TokenEndpoint
from tests.actions.pki import Pki
from tests.conftest import load_fixture
from tests.httpsink import Answer, HttpSink, Recorded
from tests.web.console.conftest import ADMIN, csrf_of, login

SECRET = "client-s3cret-value"

RULES = """
version: 1
destinations:
  crm:
    type: http
    url: "{refusing}/crm"
    retry: {{attempts: 1}}
    auth: {{oauth2: {{token_url: "{endpoint}", client_id: relay, client_secret: "{secret}"}}}}
  erp:
    type: http
    url: "{refusing}/erp"
    retry: {{attempts: 1}}
    auth: {{oauth2: {{token_url: "{strict}", client_id: relay, client_secret: "{secret}"}}}}
  vault:
    type: http
    url: "{mtls}/vault"
    retry: {{attempts: 1}}
    tls: {{ca: "{ca}"}}
  ledger:
    type: http
    url: "{mtls}/ledger"
    tls:
      ca: "{ca}"
      client_cert: "{cert}"
      client_key: |
{key}
    auth:
      oauth2:
        token_url: "{endpoint}"
        client_id: relay
        client_secret: {secret}
routes: [{{name: all, to: [crm, erp, vault, ledger]}}]
"""


def refuse_every_token(request: Recorded) -> Answer:
    given = (request.header("Authorization") or "").removeprefix("Bearer ")
    return Answer(401, {"Content-Type": "text/plain"}, f"token {given} is revoked")


def rules_text(pki: Pki, endpoint: str, strict: str, refusing: str, mtls: str) -> str:
    key = "\n".join("        " + line for line in pki.text("client.key").splitlines())
    return RULES.format(
        refusing=refusing,
        endpoint=endpoint,
        strict=strict,
        mtls=mtls,
        secret=SECRET,
        ca=pki.path("ca.pem"),
        cert=pki.path("client.pem"),
        key=key,
    )


def key_lines(pki: Pki) -> list[str]:
    """The lines of the client key's PEM that are the key itself."""
    return [line for line in pki.text("client.key").splitlines() if "-----" not in line]


@pytest.mark.e2e
def test_a_real_worker_never_logs_nor_dead_letters_a_secret_or_token(
    start_relay, pki: Pki, tmp_path: Path
) -> None:
    with (
        TokenEndpoint(client_secret=SECRET) as endpoint,
        TokenEndpoint(client_secret="another-secret", explain=f" ({SECRET})") as strict,
        HttpSink() as refusing,
        HttpSink(tls=pki.server_context()) as mtls,
    ):
        refusing.respond = refuse_every_token
        mtls.respond = endpoint.guard
        text = rules_text(
            pki, endpoint.url, strict.url, refusing.url("").rstrip("/"), mtls.url("").rstrip("/")
        )
        relay = start_relay(text)
        event_id = relay.post(load_fixture("inbound-sms.json"))
        ends = {entry["destination"]: entry for entry in relay.finished(event_id, 4)}
        assert ends["ledger"]["step"] == "delivered", ends
        assert [r.path for r in mtls.requests] == ["/ledger"]
        tokens = list(endpoint.issued)
        assert len(tokens) >= 3  # crm's two (the second after a 401), ledger's
    reasons = {}
    for name in ("crm", "erp", "vault"):
        record = relay.store.dead_letters.get(f"{event_id}:{name}")
        assert record is not None, name
        reasons[name] = record["reason"]
        stored = json.dumps(record)
        assert SECRET not in stored and not any(token in stored for token in tokens)
    assert reasons == {
        "crm": "HTTP 401: token **** is revoked",
        "erp": "oauth2 token: 401 invalid_client: Client authentication failed (****)",
        "vault": "tls: tlsv13 alert certificate required",
    }
    log = (tmp_path / "worker.log").read_text()
    assert "tlsv13 alert certificate required" in log  # the log does say what failed
    assert SECRET not in log
    assert not any(token in log for token in tokens)
    assert not any(line in log for line in key_lines(pki))


def test_the_dry_run_shows_no_secret(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        rules_text(pki, "https://login.internal/token", "https://x/t", "https://a", "https://b")
    )
    ruleset = load_rules(str(path), env={})
    settings = load_settings({"RELAY_REDIS_URL": "redis://127.0.0.1:6379/0"})
    reports = dry_run(ruleset, load_fixture("inbound-sms.json"), settings, explain=True)
    shown = json.dumps(reports)
    assert [d["destination"] for d in reports[0]["deliveries"]] == ["crm", "erp", "vault", "ledger"]
    assert SECRET not in shown
    assert not any(line in shown for line in key_lines(pki))
    close_session()
    TOKENS.clear()


def test_the_console_rules_page_and_playground_show_no_secret(
    env: dict, pki: Pki, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        rules_text(pki, "https://login.internal/token", "https://x/t", "https://a", "https://b")
    )
    app = create_app(load_settings({**env, "RELAY_ADMIN_TOKEN": ADMIN, "RELAY_RULES": str(path)}))
    client = app.test_client()
    login(client)
    page = client.get("/ui/rules").get_data(as_text=True)
    assert "client_secret" in page and "client_key" in page  # the file is shown …
    assert SECRET not in page  # … with its secrets masked
    assert not any(line in page for line in key_lines(pki))
    payload = json.dumps(load_fixture("inbound-sms.json"))
    answer = client.post(
        "/ui/rules/playground", data={"payload": payload, "csrf_token": csrf_of(page)}
    )
    assert answer.status_code == 200
    played = answer.get_data(as_text=True)
    assert "ledger" in played
    assert SECRET not in played
    assert not any(line in played for line in key_lines(pki))
