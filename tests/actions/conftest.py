"""Fixtures of the action tests: certificates made once a session."""

from __future__ import annotations

import pytest

from tests.actions.pki import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A test CA, a server certificate for 127.0.0.1, client certificates (tests/actions/pki.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
