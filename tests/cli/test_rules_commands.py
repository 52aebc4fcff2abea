"""``relay rules check`` and ``relay rules test`` as an operator runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness import FIXTURES, ROOT
from tests.httpsink import HttpSink

EXAMPLE = str(ROOT / "config" / "rules.yaml")


def relay(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_of_the_example_rules_is_ok():
    done = relay("rules", "check", EXAMPLE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{EXAMPLE}: OK — 2 routes, 2 destinations")


def test_check_reports_every_error_and_exits_1():
    path = "tests/rules/errors/many_errors.yaml"
    done = relay("rules", "check", path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"{path}: 10 error(s)"
    assert (
        f"{path}:15: routes[0].match.code: unknown operator 'rnage' (did you mean 'range'?)"
        in lines
    )
    assert all(line.startswith(f"{path}:") for line in lines)


def test_check_of_a_missing_file_says_so():
    done = relay("rules", "check", "nope.yaml")
    assert done.returncode == 1
    assert done.stderr.startswith("nope.yaml:1: file: cannot read: No such file or directory")


def test_rules_test_shows_routes_and_rendered_bodies_and_sends_nothing(tmp_path):
    with HttpSink() as sink:
        import os

        env = {**os.environ, "FAILURES_WEBHOOK_URL": sink.url("/failures")}
        event = str(FIXTURES / "receipt-failed-invalid-address.json")
        done = relay("rules", "test", EXAMPLE, "--event", event, env=env)
        assert done.returncode == 0, done.stderr
        assert "routes matched: failures" in done.stdout
        assert "→ failures-webhook (http, via failures)" in done.stdout
        assert "POST ****\n" in done.stdout  # the URL came from the environment
        assert sink.url("/failures") not in done.stdout
        assert '"code_description": "Invalid address"' in done.stdout
        assert sink.requests == []


def test_rules_test_json_for_machines():
    event = str(FIXTURES / "inbound-sms.json")
    done = relay("rules", "test", EXAMPLE, "--event", event, "--json")
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)
    assert report["routes"] == ["inbound"]
    (delivery,) = report["deliveries"]
    assert delivery["destination"] == "trace" and delivery["type"] == "log"
    assert delivery["request"]["line"].startswith("inbound_message INCOMING id=")


def test_rules_test_of_an_unrouted_event(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\ndestinations: {t: {type: log}}\n"
        "routes: [{name: r, match: {kind: delivery_receipt}, to: [t]}]\n"
    )
    done = relay("rules", "test", str(rules), "--event", str(FIXTURES / "inbound-sms.json"))
    assert "routes matched: (none: unrouted)" in done.stdout


def test_rules_test_of_a_bad_payload_names_the_field(tmp_path):
    payload = tmp_path / "bad.json"
    payload.write_text('{"oa": "1", "da": "2"}')
    done = relay("rules", "test", EXAMPLE, "--event", str(payload))
    assert done.returncode == 1
    assert "message: Missing data for required field." in done.stderr


def test_up_refuses_a_bad_rules_file(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_DATA_DIR"] = str(tmp_path / "var")
    done = relay("up", "--rules", "tests/rules/errors/unknown_operator.yaml", env=env)
    assert done.returncode == 2
    assert "unknown operator" in done.stderr
    assert not (tmp_path / "var").exists()


ALL_KINDS = """
version: 1
destinations:
  oncall:
    type: email
    to: [oncall@example.com]
    subject: "SMS failure {{ event.code }}"
    body: "{{ event.status }} for {{ event.destination | mask }}"
  ops:
    type: slack
    webhook_url: https://hooks.slack.com/services/T000/B000/s3cretpath
    text: "SMS {{ event.status }}"
  bot:
    type: slack
    token: xoxb-s3cret
    channel: "#ops"
    text: "x"
    blocks: '[{"type": "section", "text": {"type": "plain_text", "text": "{{ event.code }}"}}]'
  crm:
    type: http
    url: https://crm.internal/sms
    headers: {Authorization: "Bearer crm-s3cret", X-Route: "{{ route }}"}
  help-reply:
    type: sms_reply
    text: "Reply STOP to opt out"
routes:
  - {name: failures, match: {kind: delivery_receipt}, to: [oncall, ops, bot, crm]}
  - {name: help, match: {keyword: HELP}, to: [help-reply]}
"""


def test_destinations_whose_settings_are_missing_fail_the_check(tmp_path):
    import os

    rules = tmp_path / "rules.yaml"
    rules.write_text(ALL_KINDS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    done = relay("rules", "check", str(rules), env=env)
    assert done.returncode == 1
    assert done.stderr.splitlines()[:2] == [
        f"{rules}:4: destinations.oncall: email destinations need RELAY_SMTP_URL "
        "(smtp://user:pass@host:port)",
        f"{rules}:23: destinations.help-reply: sms_reply destinations need RELAY_WEBEX_SERVICE_KEY",
    ]


def test_blocks_that_do_not_render_to_json_fail_the_check(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(ALL_KINDS.replace('\'[{"type"', "'[{type"))
    done = relay("rules", "check", str(rules), env=_configured_env())
    assert done.returncode == 1
    assert "destinations.bot: blocks: does not render to JSON" in done.stderr


def _configured_env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        {
            "RELAY_SMTP_URL": "smtp://u:smtp-s3cret@127.0.0.1:2525",
            "RELAY_WEBEX_SERVICE_KEY": "webex-s3cret",
            "RELAY_WEBEX_HUB_SECRET": "hub-s3cret",  # sms_reply needs authenticated callbacks
        }
    )
    return env


SMS_ONLY = """\
version: 1
destinations:
  help-reply: {type: sms_reply, text: "Reply STOP to opt out"}
routes:
  - {name: help, match: {keyword: HELP}, to: [help-reply]}
"""


def test_sms_reply_does_not_load_while_callbacks_are_unauthenticated(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(SMS_ONLY)
    env = {k: v for k, v in _configured_env().items() if k != "RELAY_WEBEX_HUB_SECRET"}
    done = relay("rules", "check", str(rules), env=env)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        f"{rules}:3: destinations.help-reply: sms_reply destinations need authenticated "
        "callbacks (RELAY_WEBEX_HUB_SECRET, RELAY_INGEST_BASIC_AUTH or RELAY_INGEST_API_KEY): "
        "without, anyone who can post to the webhook can make relay send SMS to any number "
        "(RELAY_ALLOW_UNAUTHENTICATED=1 allows it)"
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"RELAY_ALLOW_UNAUTHENTICATED": "1"},
        {"RELAY_WEBEX_HUB_SECRET": "hub-s3cret"},
        {"RELAY_INGEST_BASIC_AUTH": "webex:pa55"},
        {"RELAY_INGEST_API_KEY_HEADER": "X-Key", "RELAY_INGEST_API_KEY": "k3y"},
    ],
)
def test_sms_reply_loads_with_authenticated_callbacks_or_the_allowance(tmp_path, extra):
    rules = tmp_path / "rules.yaml"
    rules.write_text(SMS_ONLY)
    env = {k: v for k, v in _configured_env().items() if k != "RELAY_WEBEX_HUB_SECRET"}
    done = relay("rules", "check", str(rules), env={**env, **extra})
    assert done.returncode == 0, done.stderr


def test_rules_test_shows_email_slack_and_sms_without_secrets(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(ALL_KINDS)
    env = _configured_env()
    receipt = relay(
        "rules",
        "test",
        str(rules),
        "--event",
        str(FIXTURES / "receipt-failed-invalid-address.json"),
        env=env,
    )
    inbound = tmp_path / "help.json"
    inbound.write_text(json.dumps({"oa": "447700900123", "da": "12345", "message": "help"}))
    reply = relay("rules", "test", str(rules), "--event", str(inbound), "--json", env=env)
    assert receipt.returncode == 0 and reply.returncode == 0, receipt.stderr + reply.stderr
    out = receipt.stdout
    assert "subject: SMS failure 7102" in out
    assert "body: Failed for ********xxxx" in out
    assert '"text": "SMS Failed"' in out
    assert '"blocks": [' in out and '"text": "7102"' in out
    assert "X-Route: failures" in out
    (report,) = json.loads(reply.stdout)
    (sms,) = report["deliveries"]
    assert sms["request"] == {
        "url": "https://api.us.webexconnect.io/v1/sms/messages",
        "from": "12345",
        "to": "+447700900123",
        "content": "Reply STOP to opt out",
        "correlationId": report["event"]["id"],
        "idempotencyKey": f"{report['event']['id']}:help-reply",
    }
    for secret in ("s3cret", "smtp-s3cret", "webex-s3cret", "xoxb"):
        assert secret not in out + reply.stdout


def test_every_commented_example_in_the_shipped_rules_loads(tmp_path):
    """Uncommenting the examples in config/rules.yaml gives a valid file."""
    lines = (ROOT / "config" / "rules.yaml").read_text().splitlines()
    uncommented = [
        line.replace("  # ", "  ", 1) if line.startswith("  # ") else line for line in lines
    ]
    rules = tmp_path / "rules.yaml"
    rules.write_text("\n".join(uncommented))
    env = {
        **_configured_env(),
        "SLACK_OPS_WEBHOOK": "https://hooks.slack.com/services/x",
        "SLACK_BOT_TOKEN": "xoxb-1",
    }
    done = relay("rules", "check", str(rules), env=env)
    assert done.returncode == 0, done.stderr
    assert "4 routes, 7 destinations" in done.stdout
