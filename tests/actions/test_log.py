"""The log action: one INFO line per delivery in the worker log."""

from __future__ import annotations

import json
import logging

import pytest

from relay.actions import send_log


def test_send_log_writes_one_line_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="relay.deliver.log"):
        outcome = send_log("event 1\nforged line")
    assert outcome.kind == "ok"
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("relay.deliver.log", logging.INFO, "event 1\\nforged line")
    ]
    assert json.dumps(outcome.to_dict())


def test_send_log_accepts_another_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="elsewhere"):
        send_log("hello", logging.getLogger("elsewhere"))
    assert [r.getMessage() for r in caplog.records] == ["hello"]
