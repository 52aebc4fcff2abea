"""``relay rules test --event`` takes a ``receipt_overdue`` payload (the ``raw`` of the
events relay makes for overdue messages), so routes for it can be tested; a bad one is a
clear error naming the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from relay.errors import PayloadError
from relay.ops.dryrun import dry_run
from relay.rules import load_rules_text
from relay.settings import load_settings
from tests.harness import ROOT

RULES = """
version: 1
lifecycle: {final_receipt_within: 15m}
destinations:
  ops-slack:
    type: slack
    webhook_url: https://hooks.slack.example/services/T0/B0/secret
    text: "{{ event.transid }} stuck at {{ event.last_status }} for {{ event.age_seconds }}s"
  trace: {type: log}
routes:
  - name: stuck
    match: {kind: receipt_overdue, last_status: submitted, callback.campaign: spring}
    to: [ops-slack]
default: {to: [trace]}
"""

OVERDUE = {
    "kind": "receipt_overdue",
    "transid": "7f3af32c-8d6a-4173-b1c8-4805135ada71",
    "destination": "447700900123",
    "last_status": "Submitted",
    "last_code": "7501",
    "first_received_at": "2026-12-01T10:00:00.000Z",
    "age_seconds": 900,
    "callbackData": "campaign=spring",
    "correlationid": "c-1",
}


def test_an_overdue_payload_is_matched_by_kind_last_status_and_callback():
    ruleset = load_rules_text(RULES, env={})
    (report,) = dry_run(ruleset, OVERDUE, load_settings({}))
    event = report["event"]
    assert event["kind"] == "receipt_overdue"
    assert event["callback"] == {"campaign": "spring"}
    assert (event["correlation_id"], event["age_seconds"]) == ("c-1", 900)
    assert report["routes"] == ["stuck"]
    (delivery,) = report["deliveries"]
    assert "7f3af32c-8d6a-4173-b1c8-4805135ada71 stuck at Submitted for 900s" in json.dumps(
        delivery
    )


def test_another_last_status_falls_to_the_default():
    ruleset = load_rules_text(RULES, env={})
    (report,) = dry_run(ruleset, [{**OVERDUE, "last_status": "Queued"}], load_settings({}))
    assert report["routes"] == ["default"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({**OVERDUE, "transid": 5}, "transid: expected text"),
        ({**OVERDUE, "age_seconds": "900"}, "age_seconds: expected a whole number"),
        ({"kind": "receipt_overdue"}, "transid: missing"),
        ([OVERDUE, {**OVERDUE, "lastStatus": "x"}], "[1].lastStatus: unknown field"),
    ],
)
def test_a_bad_overdue_payload_names_its_field(payload, message):
    with pytest.raises(PayloadError) as caught:
        dry_run(load_rules_text(RULES, env={}), payload, load_settings({}))
    assert str(caught.value).startswith(message)


def test_rules_test_command_takes_the_payload(tmp_path):
    rules, event = tmp_path / "rules.yaml", tmp_path / "overdue.json"
    rules.write_text(RULES)
    event.write_text(json.dumps(OVERDUE))
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "rules", "test", str(rules), "--event", str(event)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert "routes matched: stuck" in done.stdout
