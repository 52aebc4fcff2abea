"""What the deploy/ files' tests need: promtool (Prometheus's), or a skip (tests/skips.py)."""

from __future__ import annotations

import shutil

import pytest

from tests.skips import skip_or_fail


@pytest.fixture
def promtool() -> str:
    """The promtool executable; the test is skipped (failed in strict mode) when there is
    none on PATH (``apt-get install prometheus`` on Debian; .ci/run installs it)."""
    found = shutil.which("promtool")
    if found is None:
        skip_or_fail("promtool", "none on PATH (Debian: apt-get install prometheus)")
    return found
