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


def test_send_log_escapes_every_control_character(caplog: pytest.LogCaptureFixture) -> None:
    line = "ok\x1b[2J\x85forged\u2028line\u2029\x00\t\x7f\r\nend"
    with caplog.at_level(logging.INFO, logger="relay.deliver.log"):
        send_log(line)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == "ok\\x1b[2J\\x85forged\\u2028line\\u2029\\x00\\t\\x7f\\r\\nend"
