"""The search, re-route and rules diff endpoints keep to their description in
relay/web/openapi.yaml (schemathesis, in-process against the suite's real Redis, bounded
and derandomized, with the admin token)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from relay.settings import load_settings
from relay.web.app import create_app
from relay.web.openapi import openapi
from tests.web.test_events_api import TOKEN
from tests.web.test_openapi import CHECKS

NEW = r"^/api/(events|events/\{id\}/reroute|rules/diff)$"

schema = schemathesis.openapi.from_dict(openapi()).include(path_regex=NEW)
schema.config.generation.update(max_examples=30, deterministic=True, database="none")


@pytest.fixture
def admin_app(env):
    return create_app(load_settings({**env, "RELAY_ADMIN_TOKEN": TOKEN}))


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_search_reroute_and_diff_keep_to_their_description(case, admin_app):
    case.call_and_validate(
        app=admin_app, headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS
    )


def test_the_three_are_described():
    paths = openapi()["paths"]
    assert set(paths["/api/events"]) == {"get"}
    assert set(paths["/api/events/{id}/reroute"]) == {"post"}
    assert set(paths["/api/rules/diff"]) == {"post"}
