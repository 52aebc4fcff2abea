"""RELAY_TEST_STRICT=1 (.ci/run) turns a skip for a missing dependency into a failure
naming it; without it the skip stays, and the session summary lists every skip's reason."""

from __future__ import annotations

import pytest

from tests.skips import STRICT_ENV

pytest_plugins = ["pytester"]

#: the suite's summary hook, as tests/conftest.py has it
CONFTEST = """
from tests.skips import summary

def pytest_terminal_summary(terminalreporter):
    summary(terminalreporter)
"""

#: a test lacking a dependency, one lacking a newer interpreter
TESTS = """
import pytest
from tests.skips import skip_or_fail

@pytest.fixture
def broker():
    skip_or_fail("RabbitMQ", "not reachable at 127.0.0.1:1/")

def test_needs_rabbitmq(broker):
    pass

def test_needs_a_newer_python():
    pytest.skip("reading pyproject.toml needs Python 3.11")
"""


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, strict: str | None):
    if strict is None:
        monkeypatch.delenv(STRICT_ENV, raising=False)
    else:
        monkeypatch.setenv(STRICT_ENV, strict)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_it=TESTS)
    return pytester.runpytest("-p", "no:cacheprovider")


def test_strict_mode_fails_a_skip_for_a_missing_dependency_naming_it(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "1")
    result.assert_outcomes(passed=0, errors=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*RELAY_TEST_STRICT=1: needs RabbitMQ: not reachable at 127.0.0.1:1/*"]
    )


def test_without_strict_mode_the_skip_stays_and_its_reason_is_listed(pytester, monkeypatch):
    result = run(pytester, monkeypatch, None)
    result.assert_outcomes(skipped=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*skipped, by reason*",
            "*1  needs RabbitMQ: not reachable at 127.0.0.1:1/",
            "*1  reading pyproject.toml needs Python 3.11",
        ]
    )


def test_strict_mode_keeps_a_skip_about_the_interpreter(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "1")
    result.stdout.fnmatch_lines(["*1  reading pyproject.toml needs Python 3.11"])
    result.stdout.no_fnmatch_line("*needs RabbitMQ: not reachable*skipped*")


def test_strict_mode_is_off_for_an_empty_or_zero_value(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "0")
    result.assert_outcomes(skipped=2)
