"""``relay destinations list|pause|resume`` run as an operator runs them (a subprocess)
against the suite's real Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from relay.ops.checks import rules_holder
from relay.settings import load_settings
from tests.harness import ROOT, relay_env

RULES = """
version: 1
destinations:
  crm:
    type: http
    url: http://127.0.0.1:9/crm
    rate_limit: 600/m
    concurrency: 2
    circuit_breaker: {failures: 4, cooldown: 1m}
  trace: {type: log}
routes:
  - name: all
    to: [crm, trace]
"""


def command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "destinations", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def run(redis_server, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = relay_env(redis_server.url, RELAY_RULES=str(rules))
    return lambda *args: command(env, *args)


def test_list_pause_for_a_while_and_resume(run, store):
    store.controls.settle("crm", "a", "transient", 0.2, "HTTP 503")
    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    header, crm, trace = listed.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "TYPE", "STATE", "BACKLOG"]
    assert crm.split()[:4] == ["crm", "http", "active", "0"]
    assert "600/m" in crm and "≤2 at once" in crm and crm.endswith("HTTP 503")
    assert "breaker 4 failures, 1m cooldown" in crm
    assert trace.split()[:3] == ["trace", "log", "active"]

    paused = run("pause", "crm", "--for", "1h")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("paused crm until 20")
    as_json = json.loads(run("list", "--json").stdout)["destinations"]
    crm_state = next(item for item in as_json if item["name"] == "crm")
    assert crm_state["state"] == "paused" and crm_state["paused_until"]
    assert crm_state["last_error"] == "HTTP 503" and crm_state["success_rate"] == 0.0

    resumed = run("resume", "crm", "--json")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["republished"] == 0 and report["destination"]["state"] == "active"


def test_an_unknown_name_or_a_bad_duration_is_one_line(run, store):
    unknown = run("pause", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr == "relay: no destination 'nope' in the rules\n"
    assert run("resume", "nope").stderr == "relay: no destination 'nope' in the rules\n"
    bad = run("pause", "crm", "--for", "soon")
    assert bad.returncode == 2 and "--for" in bad.stderr
    assert store.controls.paused(["crm"]) == {}


def test_pause_and_resume_check_the_name_against_the_rules_in_force_recorded_in_redis(
    redis_server, tmp_path, store
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = load_settings(relay_env(redis_server.url, RELAY_RULES=str(rules)))
    holder = rules_holder(settings, store)
    # as a web or worker process loads its rules: recorded; the command has no rules file
    env = relay_env(redis_server.url, RELAY_RULES=str(tmp_path / "missing.yaml"))
    paused = command(env, "pause", "crm", "--json")
    assert paused.returncode == 0, paused.stderr
    item = json.loads(paused.stdout)
    assert item["state"] == "paused" and item["type"] == "http"
    assert item["rate_limit"] == "600/m" and item["circuit_breaker"] == "4 failures, 1m cooldown"
    resumed = command(env, "resume", "crm")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("resumed crm: 0 waiting deliveries")
    unknown = command(env, "pause", "nope")
    assert (unknown.returncode, unknown.stderr) == (1, no_destination("nope"))
    rules.write_text(RULES.replace("trace", "nope"))
    assert holder.check()  # reloaded: the new rules are the ones in force
    assert command(env, "pause", "nope").returncode == 0
    gone = command(env, "pause", "trace")
    assert (gone.returncode, gone.stderr) == (1, no_destination("trace"))

    store.client.delete("relay:rules:in-force")  # no process has recorded rules yet
    missing = command(env, "pause", "crm")
    assert missing.returncode == 1
    assert missing.stderr.startswith("relay: cannot read the rules: ")
    assert "missing.yaml" in missing.stderr
    assert "no web or worker process has recorded the rules in force in Redis" in missing.stderr


def no_destination(name: str) -> str:
    return f"relay: no destination {name!r} in the rules\n"
