"""relay/web/openapi.yaml describes the public HTTP API, and the app keeps to it (schemathesis).

The run is in-process (the Flask app of the suite's real Redis, no network), bounded and
derandomized. It covers the public paths only; the admin API (``/api/``) is described
but not fuzzed here.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay import __version__
from relay.web import ingest
from relay.web.openapi import openapi
from tests.harness import ROOT

PUBLIC = r"^/(webhooks/|healthz$|readyz$|metrics$|openapi\.json$)"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


schema = schemathesis.openapi.from_dict(openapi()).include(path_regex=PUBLIC)
schema.config.generation.update(max_examples=25, deterministic=True, database="none")


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_public_api_keeps_to_its_description(case, app):
    served = {rule.rule for rule in app.url_map.iter_rules()} | set(ingest.RULES)
    if flask_rule(case.path) not in served:
        pytest.skip(f"{case.path} is described but not served yet")  # /metrics, for now
    case.call_and_validate(app=app, checks=CHECKS)


def test_the_webhook_urls_are_served_in_front_of_flask(app):
    """They are described, and checked above, though Flask's URL map does not hold them."""
    assert isinstance(app.wsgi_app, ingest.WebhookEndpoint)
    assert {flask_rule(path) for path in openapi()["paths"]} >= set(ingest.RULES)


def flask_rule(path: str) -> str:
    """``/a/{b}`` → ``/a/<b>``."""
    return re.sub(r"\{(\w+)\}", r"<\1>", path)


def test_openapi_json_is_the_packaged_yaml(client):
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.json == yaml.safe_load((ROOT / "relay" / "web" / "openapi.yaml").read_text())
    assert answer.json == openapi()
    assert answer.json["info"]["version"] == __version__


def test_description_covers_every_public_and_admin_path():
    paths = set(openapi()["paths"])
    assert {
        "/webhooks/webex-connect",
        "/webhooks/webex-connect/{source}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/api/events/{ref}",
        "/api/dead-letters",
        "/api/dead-letters/{id}",
        "/api/dead-letters/{id}/replay",
        "/api/dead-letters/replay",
        "/api/rules/test",
        "/api/destinations",
        "/api/destinations/{name}/pause",
        "/api/destinations/{name}/resume",
    } <= paths
    webhook = openapi()["paths"]["/webhooks/webex-connect"]
    assert set(webhook) == {"get", "head", "post"}
    assert "/metrics" in paths and "text/plain" in str(openapi()["paths"]["/metrics"])


def test_every_admin_operation_needs_the_bearer_token():
    for path, item in openapi()["paths"].items():
        for method, operation in item.items():
            if path.startswith("/api/") and method != "parameters":
                assert operation["security"] == [{"bearerAuth": []}], (method, path)
                assert "admin" in operation["tags"]


def test_every_served_public_route_is_described(app):
    described = {flask_rule(path) for path in openapi()["paths"]}
    for rule in app.url_map.iter_rules():
        # the console (/ui) is HTML pages for a browser, not part of the HTTP API
        if rule.endpoint != "static" and not rule.rule.startswith(("/api", "/ui")):
            assert rule.rule in described, rule.rule
