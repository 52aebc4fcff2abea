"""Commands run beside ``relay up --rules FILE`` (same data dir, no RELAY_RULES of their own)
read the rules that ``relay up`` runs, not ``config/rules.yaml``: from another directory,
where there is no config/rules.yaml, as an operator in another shell would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from relay.cli.running_up import RULES_FILE, running_rules
from tests.harness import relay_command
from tests.worker.test_recovery import Up

pytestmark = pytest.mark.e2e

RULES = """\
version: 1
destinations:
  app: {type: http, url: "http://127.0.0.1:9/hook"}
routes:
  - {name: all, to: [app]}
"""


def beside(data_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``relay ARGS…`` as a user runs it in another shell: only RELAY_DATA_DIR set."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    return relay_command({**env, "RELAY_DATA_DIR": str(data_dir)}, *args, cwd=cwd)


def test_pause_resume_and_rules_commands_use_the_rules_relay_up_runs(tmp_path):
    rules = tmp_path / "mine.yaml"
    rules.write_text(RULES)
    data_dir, elsewhere = tmp_path / "var", tmp_path / "elsewhere"
    elsewhere.mkdir()
    up = Up(data_dir, rules, tmp_path / "up.log")
    try:
        paused = beside(data_dir, elsewhere, "destinations", "pause", "app")
        assert paused.returncode == 0, paused.stderr
        listed = beside(data_dir, elsewhere, "destinations", "list")
        assert listed.returncode == 0, listed.stderr
        assert "paused" in listed.stdout
        resumed = beside(data_dir, elsewhere, "destinations", "resume", "app")
        assert resumed.returncode == 0, resumed.stderr
        checked = beside(data_dir, elsewhere, "rules", "check")
        assert checked.returncode == 0, checked.stderr
        assert str(rules) in checked.stdout + checked.stderr
    finally:
        up.stop()
    assert not (data_dir / RULES_FILE).exists()  # gone with relay up
    after = beside(data_dir, elsewhere, "destinations", "pause", "app")
    assert after.returncode != 0  # no relay up: its rules are not read any more


def test_a_record_left_by_a_killed_relay_up_is_ignored(tmp_path):
    (tmp_path / RULES_FILE).write_text(f"{2**22 + 12345}\n/somewhere/rules.yaml\n")
    assert running_rules(tmp_path) is None
    (tmp_path / RULES_FILE).write_text(f"{os.getpid()}\n/somewhere/rules.yaml\n")
    assert running_rules(tmp_path) == "/somewhere/rules.yaml"
    (tmp_path / RULES_FILE).write_text("not ours")
    assert running_rules(tmp_path) is None
