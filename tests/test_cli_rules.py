"""``relay rules check`` and ``relay rules test`` as an operator runs them."""

from __future__ import annotations

import json
import subprocess
import sys

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
    path = "tests/rules_errors/many_errors.yaml"
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
        assert f"POST {sink.url('/failures')}" in done.stdout
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
    done = relay("up", "--rules", "tests/rules_errors/unknown_operator.yaml", env=env)
    assert done.returncode == 2
    assert "unknown operator" in done.stderr
    assert not (tmp_path / "var").exists()
