"""deploy/prometheus: the alert rules load (promtool check rules), their unit tests pass
(promtool test rules), every alert is tested firing and not firing, and each carries what
an operator needs: a ``for:``, a severity, a summary, a description and a runbook that the
README has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.files import RULE_TESTS, RULES, alerts
from tests.harness import ROOT

README = ROOT / "README.md"


def anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    headings = re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules_passes(promtool):
    done = run(promtool, "check", "rules", RULES.name, cwd=RULES.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_promtool_unit_tests_pass(promtool):
    done = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_not_firing():
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for rule in alerts():
        expected = [case["exp_alerts"] for case in cases if case["alertname"] == rule["alert"]]
        assert any(expected), f"{rule['alert']}: no test where it fires"
        assert not all(expected), f"{rule['alert']}: no test where it does not fire"


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_each_alert_has_a_wait_a_severity_a_summary_and_a_runbook_in_the_readme(rule):
    assert rule["for"], "without for: an alert flaps"
    assert rule["labels"]["severity"] in ("critical", "warning")
    notes = rule["annotations"]
    assert notes["summary"] and notes["description"]
    page, _, anchor = notes["runbook_url"].partition("#")
    assert page == "README.md"
    assert anchor == rule["alert"].lower()
    assert anchor in anchors(README.read_text()), f"README has no heading {rule['alert']}"
