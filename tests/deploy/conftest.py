"""What the deploy/ files' tests need: promtool (Prometheus's), or a skip that is listed."""

from __future__ import annotations

import shutil

import pytest

#: the tests skipped for want of promtool: test id, why
_PROMTOOL_SKIPPED: list[str] = []


@pytest.fixture
def promtool(request) -> str:
    """The promtool executable; the test is skipped, and listed at the end of the run, when
    there is none on PATH (``apt-get install prometheus`` on Debian; .ci/run installs it)."""
    found = shutil.which("promtool")
    if found is None:
        _PROMTOOL_SKIPPED.append(request.node.nodeid)
        pytest.skip("no promtool on PATH (apt-get install prometheus)")
    return found


def pytest_terminal_summary(terminalreporter):
    if _PROMTOOL_SKIPPED:
        terminalreporter.section("promtool tests SKIPPED")
        terminalreporter.write_line(
            f"{len(_PROMTOOL_SKIPPED)} tests of deploy/prometheus did not run: no promtool on "
            "PATH (Debian: apt-get install prometheus):"
        )
        for nodeid in _PROMTOOL_SKIPPED:
            terminalreporter.write_line(f"  {nodeid}")
