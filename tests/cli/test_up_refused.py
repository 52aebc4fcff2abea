"""A second ``relay up`` on a data dir in use: the refusal, first and alone (no process of
the first one is needed: this test holds the data dir's lock itself)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from relay.cli.embedded import free_port
from tests.harness import ROOT


def test_up_on_a_data_dir_in_use_prints_the_refusal_first_and_alone(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    env["RELAY_DATA_DIR"] = str(data_dir)  # and no callback authentication: a warning is due
    with open(data_dir / "relay.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `relay up` holds it
        done = subprocess.run(
            [sys.executable, "-m", "relay.cli", "up", "--port", str(free_port())],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert (
        done.stderr == f"relay: RELAY_DATA_DIR: {data_dir.resolve()} is in use by another relay\n"
    )
    assert done.stdout == ""
