"""Hot reload (relay.rules.reloader): a failed reload is remembered until a version loads;
a file still being written is read again, not reported."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from relay.errors import RulesError
from relay.rules import load_rules, load_rules_text
from relay.rules.reloader import WATCHER_THREAD, RulesHolder, stop_watchers

GOOD = """\
version: 1
destinations:
  trace: {type: log}
routes:
  - name: all
    match: {}
    to: [trace]
"""
UNDEFINED = GOOD.replace("to: [trace]", "to: [nowhere]")
BROKEN_YAML = GOOD.replace("routes:", "routes: [")
NEXT = (
    GOOD
    + """\
  - name: receipts
    match: {kind: delivery_receipt}
    to: [trace]
"""
)


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    return path


def holder_of(path, outcomes: list[bool] | None = None) -> RulesHolder:
    record = (lambda ruleset, ok: outcomes.append(ok)) if outcomes is not None else None
    return RulesHolder(str(path), load_rules, on_change=record)


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [(UNDEFINED, 7, "undefined destination 'nowhere'"), (BROKEN_YAML, 5, "syntax: ")],
)
def test_a_failed_reload_is_remembered_with_its_first_error_and_the_version_kept(
    rules_file, text, line, what
):
    holder = holder_of(rules_file)
    running = holder.current.version
    rules_file.write_text(text)
    assert holder.check() is False
    assert holder.current.version == running
    failure = holder.failure
    assert failure is not None and failure.version == running
    assert str(failure).startswith(f"reload failed: {rules_file}:{line}: ")
    assert what in str(failure)
    assert str(failure).endswith(f", still running version {running}")


def test_a_version_that_loads_clears_the_failure(rules_file):
    holder = holder_of(rules_file)
    rules_file.write_text(UNDEFINED)
    holder.check()
    assert holder.failure is not None
    rules_file.write_text(NEXT)
    assert holder.check() is True
    assert holder.failure is None
    assert holder.current.version == load_rules_text(NEXT).version


def test_a_file_still_being_written_is_read_again_not_reported(rules_file, caplog):
    cut = len(NEXT) - 20  # in the middle of the last route
    with pytest.raises(RulesError):
        load_rules_text(NEXT[:cut])  # the half-written file alone would not load
    outcomes: list[bool] = []
    holder = holder_of(rules_file, outcomes)
    rules_file.write_text(NEXT[:cut])  # an ordinary write, in place, in two steps

    def write_the_rest() -> None:
        time.sleep(0.05)
        with open(rules_file, "a") as handle:
            handle.write(NEXT[cut:])

    writer = threading.Thread(target=write_the_rest)
    with caplog.at_level(logging.INFO, logger="relay.rules"):
        writer.start()
        taken = holder.check()  # reads the half-written file
        writer.join()
        taken = holder.check() or taken
    assert taken
    assert holder.current.version == load_rules_text(NEXT).version
    assert holder.failure is None
    assert "reload failed" not in caplog.text
    assert False not in outcomes


def watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WATCHER_THREAD]


def test_stop_watching_ends_the_watcher_and_the_next_ensure_starts_one(rules_file):
    holder = holder_of(rules_file)
    holder.ensure_watching()
    holder.ensure_watching()  # one per process, however often it is asked
    (watcher,) = watchers()
    holder.stop_watching()
    watcher.join(5)
    assert not watcher.is_alive()
    holder.ensure_watching()  # watching again: a change is taken
    rules_file.write_text(NEXT)
    wait = time.monotonic() + 10
    while [route.name for route in holder.current.routes] != ["all", "receipts"]:
        assert time.monotonic() < wait, "the new watcher did not reload"
        time.sleep(0.05)
    stop_watchers()  # every holder's, as the suite's fixture does after each test
    for thread in watchers():
        thread.join(5)
    assert watchers() == []
