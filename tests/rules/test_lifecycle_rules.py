"""The ``lifecycle`` key: ``final_receipt_within``, a duration; absent means off. A bad
one is a ``file:line`` error naming the key (one fixture per error in
``lifecycle_errors/``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.errors import RulesError
from relay.rules import load_rules, load_rules_text
from tests.harness import ROOT

ERRORS = Path(__file__).parent / "lifecycle_errors"

#: fixture → line, "where: what", … (every error, in the order reported)
EXPECTED: dict[str, tuple[int | str, ...]] = {
    "bad_within": (
        6,
        "lifecycle.final_receipt_within: bad duration 'a quarter hour' "
        "(use 250ms, 2s, 10m, 24h, 7d, or a number of seconds)",
    ),
    "zero_within": (6, "lifecycle.final_receipt_within: duration '0s' must be greater than 0"),
    "unknown_key": (
        5,
        "lifecycle: missing required key 'final_receipt_within'",
        6,
        "lifecycle: unknown key 'final_receipt_in' (did you mean 'final_receipt_within'?)",
    ),
    "missing_within": (5, "lifecycle: missing required key 'final_receipt_within'"),
    "not_a_mapping": (5, "lifecycle: expected a mapping"),
}

BASE = "version: 1\ndestinations:\n  trace: {type: log}\nroutes: []\n"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_lifecycle_error_reports_its_line_and_key(name):
    path = ERRORS / f"{name}.yaml"
    expected = EXPECTED[name]
    with pytest.raises(RulesError) as caught:
        load_rules(str(path), env={})
    pairs = zip(expected[::2], expected[1::2], strict=True)
    assert caught.value.errors == [f"{path}:{line}: {message}" for line, message in pairs]


def test_every_lifecycle_fixture_has_an_expected_message():
    assert {path.stem for path in ERRORS.glob("*.yaml")} == set(EXPECTED)


def test_final_receipt_within_is_read_as_seconds():
    ruleset = load_rules_text(BASE + "lifecycle:\n  final_receipt_within: 15m\n", env={})
    assert ruleset.lifecycle is not None
    assert ruleset.lifecycle.final_receipt_within == 900.0
    assert ruleset.lifecycle.line == 5


@pytest.mark.parametrize("tail", ["", "lifecycle:\n"])
def test_lifecycle_absent_or_null_is_off(tail):
    assert load_rules_text(BASE + tail, env={}).lifecycle is None


def test_rules_check_validates_the_key_and_names_the_deadline(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(BASE + "lifecycle: {final_receipt_within: 90s}\n")
    bad.write_text(BASE + "lifecycle: {final_receipt_within: soon}\n")
    command = [sys.executable, "-m", "relay.cli", "rules", "check"]
    ok = subprocess.run([*command, str(good)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "no default, final receipt within 90s, version" in ok.stdout
    failed = subprocess.run([*command, str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 1
    assert f"{bad}:5: lifecycle.final_receipt_within: bad duration 'soon'" in failed.stderr
