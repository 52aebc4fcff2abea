"""The audit log of the ``relay`` commands that change something, run as an operator runs
them (a subprocess against the suite's real Redis): one relay.audit line on stderr each,
saying ``cli`` and the OS user, and what was done."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys

import pytest

from tests.harness import ROOT, relay_env
from tests.ops.test_search import receipt, route
from tests.web.console.conftest import seed_dead_letter

CANDIDATE = ROOT / "config" / "rules.yaml"  #: the rules in force: the diff changes nothing


@pytest.fixture
def relay(redis_server):
    env = relay_env(redis_server.url, RELAY_LOG_FORMAT="json")

    def run(*args: str) -> list[dict]:
        """The audit lines of ``relay ARGS…`` (which must succeed)."""
        done = subprocess.run(
            [sys.executable, "-m", "relay.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        json.loads(done.stdout) if "--json" in args else None  # stdout stays the answer alone
        return [line for line in lines if line["logger"] == "relay.audit"]

    return run


def test_each_command_that_changes_something_writes_one_audit_line(relay, store):
    for event_id in ("01A", "01B", "01C"):
        seed_dead_letter(store, event_id, "trace")
    event = receipt()
    route(store, event, ["failures"], ["trace"])
    commands = [
        ("destinations", "pause", "trace", "--for", "1h", "--json"),
        ("destinations", "resume", "trace"),
        ("dlq", "replay", "01A:trace", "--json"),
        ("dlq", "delete", "01B:trace"),
        ("dlq", "purge", "--older-than", "7d"),
        ("events", "reroute", event["id"]),
        ("rules", "diff", str(CANDIDATE), "--since", "1h", "--json"),
        ("dlq", "list"),  # reading: no line
    ]
    lines = [relay(*command) for command in commands]
    assert [
        [(line["action"], line.get("ids"), line.get("count")) for line in one] for one in lines
    ] == [
        [("pause", None, None)],
        [("resume", None, 0)],
        [("replay", ["01A:trace"], 1)],
        [("delete", ["01B:trace"], 1)],
        [("purge", None, 0)],
        [("reroute", [event["id"]], 1)],
        [("rules_diff", None, 1)],
        [],
    ]
    for (line,) in lines[:-1]:
        assert (line["role"], line["via"], line["user"]) == ("cli", "cli", getpass.getuser())
        assert "client" not in line
    assert lines[0][0]["destination"] == "trace"
    assert lines[0][0]["message"] == f"cli user {getpass.getuser()}: pause trace for 1h"
