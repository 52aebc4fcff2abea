"""What gets installed: floors above known vulnerabilities, and a lock file with a hash for
every pinned package and every dependency the project declares."""

from __future__ import annotations

import re

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.harness import ROOT

#: the first releases with the fixes (CVE-2024-56201, CVE-2024-56326, CVE-2025-27516 in
#: Jinja2's sandbox; CVE-2024-47081 in requests)
FIXED = {"jinja2": Version("3.1.6"), "requests": Version("2.32.4")}


# the interpreter, not a backend CI installs: a plain skip, even in strict mode (tests/skips.py)
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]["test"]
    return [Requirement(line) for line in [*project["dependencies"], *extras]]


def locked() -> dict[str, tuple[Version, list[str]]]:
    """name → (pinned version, its hashes)."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9_.-]+)==([^\s\\]+)", block)
        if head:
            name = head.group(1).lower().replace("_", "-")
            pins[name] = (Version(head.group(2)), re.findall(r"--hash=sha256:[0-9a-f]{64}", block))
    return pins


def test_floors_exclude_the_vulnerable_releases():
    floors = {req.name.lower(): req.specifier for req in declared()}
    for name, fixed in FIXED.items():
        assert not floors[name].contains(Version(f"{fixed.major}.{fixed.minor}.{fixed.micro - 1}"))
        assert floors[name].contains(fixed)


def test_every_declared_dependency_is_locked_with_hashes_at_an_allowed_version():
    pins = locked()
    for req in declared():
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in requirements.lock"
        version, hashes = pins[name]
        assert req.specifier.contains(version, prereleases=True), (name, version)
    assert all(hashes for _, hashes in pins.values())
