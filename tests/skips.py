"""Skips for a missing dependency, listed at the end of the run; failures in strict mode.

The suite needs some programs the README names as backends: RabbitMQ (the amqp broker
variants), a redis-server >= 7 (besides the bundled 6.2), Chromium (the console's browser
tests), openssl (test certificates) and promtool (the alert rules). On a user's bare
machine a test that lacks one is skipped, saying which, and the session summary lists
every skip with its reason. With ``RELAY_TEST_STRICT=1`` (.ci/run sets it, after making
sure every one of them is there) each such skip is a failure that names the dependency
instead: a green CI run proves every backend the README names.

Skips about the interpreter (a module of a newer Python) or the platform (``/proc``) are
not dependencies CI can install: they stay plain ``pytest.skip``, listed with the others.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import NoReturn

import pytest

#: set to 1 (CI) to make a missing dependency a failure instead of a skip
STRICT_ENV = "RELAY_TEST_STRICT"


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def skip_or_fail(dependency: str, reason: str) -> NoReturn:
    """Skip the test for want of ``dependency`` (``reason`` says how to get it), or fail
    it, naming the dependency, in strict mode."""
    message = f"needs {dependency}: {reason}"
    if strict():
        pytest.fail(f"{STRICT_ENV}=1: {message}", pytrace=False)
    pytest.skip(message)


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped report gives (pytest keeps it as (file, line, "Skipped: …"))."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The session's skips, grouped by reason with how many tests each kept from running."""
    reasons = Counter(skip_reason(report) for report in terminalreporter.stats.get("skipped", []))
    if not reasons:
        return
    terminalreporter.section("skipped, by reason")
    if not strict():
        terminalreporter.write_line(
            f"(with {STRICT_ENV}=1, as in CI, a skip for a missing dependency is a failure)"
        )
    for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
        terminalreporter.write_line(f"{count:5d}  {reason}")
