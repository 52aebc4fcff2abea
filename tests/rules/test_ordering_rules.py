"""``ordered_by`` and ``on_failure``: any destination type may have them; a bad one is a
``file:line`` error naming the key (one fixture per error in ``ordering_errors/``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.errors import RulesError
from relay.rules import load_rules, load_rules_text
from tests.harness import ROOT

ERRORS = Path(__file__).parent / "ordering_errors"

EXPECTED = {
    "ordered_by_unknown_field": (
        6,
        "destinations.crm.ordered_by: unknown field 'transidd' (did you mean 'transid'?)",
    ),
    "ordered_by_sub_field": (
        6,
        "destinations.crm.ordered_by: field 'transid' has no sub-fields (only callback and raw)",
    ),
    "on_failure_unknown": (7, "destinations.crm.on_failure: expected skip or block, got 'stop'"),
    "on_failure_without_ordered_by": (
        6,
        "destinations.crm.on_failure: on_failure applies to ordered deliveries: add ordered_by",
    ),
}

EVERY_TYPE = """
version: 1
destinations:
  hook: {type: http, url: "https://crm.example.com/hook", ordered_by: transid}
  trace: {type: log, ordered_by: callback.order_id, on_failure: block}
  mail: {type: email, to: ops@example.com, subject: s, body: b, ordered_by: destination}
  chat: {type: slack, webhook_url: "https://hooks.example.com/x", ordered_by: raw.a.0}
  reply: {type: sms_reply, text: thanks, ordered_by: sender, on_failure: skip}
routes:
  - {name: receipts, match: {kind: delivery_receipt}, to: [hook, trace, mail, chat]}
  - {name: messages, match: {kind: inbound_message}, to: [reply]}
"""


@pytest.mark.parametrize(
    "name", sorted({*EXPECTED, *(path.stem for path in ERRORS.glob("*.yaml"))})
)
def test_each_ordering_error_reports_its_exact_message(name):
    path = ERRORS / f"{name}.yaml"
    line, message = EXPECTED[name]  # a fixture with no expected message fails here
    with pytest.raises(RulesError) as caught:
        load_rules(str(path), env={})
    assert caught.value.errors == [f"{path}:{line}: {message}"]


def test_every_destination_type_may_be_ordered():
    ruleset = load_rules_text(EVERY_TYPE)
    ordered = {name: (d.ordered_by, d.on_failure) for name, d in ruleset.destinations.items()}
    assert ordered == {
        "hook": ("transid", "skip"),
        "trace": ("callback.order_id", "block"),
        "mail": ("destination", "skip"),
        "chat": ("raw.a.0", "skip"),
        "reply": ("sender", "skip"),
    }
    assert ruleset.ordered_fields == (
        "transid",
        "callback.order_id",
        "destination",
        "raw.a.0",
        "sender",
    )


def test_the_value_of_a_key_is_read_as_conditions_read_it():
    ruleset = load_rules_text(EVERY_TYPE)
    event = {
        "kind": "delivery_receipt",
        "transid": "",  # empty: no key
        "callback": {"order_id": 7500.0},  # a number: as text
        "destination": "447700900123",
        "raw": {"a": [True]},  # not text: no key
    }
    assert ruleset.order_values(event) == [
        ("callback.order_id", "7500"),
        ("destination", "447700900123"),
    ]


def test_rules_check_names_a_bad_ordered_by():
    path = ERRORS / "ordered_by_unknown_field.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "rules", "check", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"{path}:6: destinations.crm.ordered_by: unknown field 'transidd'" in done.stderr
