"""A dry run shows what would be sent, never the secrets in it: URL passwords, query
values, and anything the rules file took from the environment."""

from __future__ import annotations

import json

from relay.ops.dryrun import dry_run
from relay.rules import load_rules_text
from relay.settings import load_settings
from tests.conftest import load_fixture

RULES = """
version: 1
destinations:
  crm:
    type: http
    url: "https://bot:${CRM_PASSWORD}@crm.example/sms?api_key=${CRM_KEY}&v=2"
    headers: {X-Tenant: "${CRM_TENANT}"}
    body: {tenant: "${CRM_TENANT}", status: "{{ event.status }}"}
routes: [{name: all, to: [crm]}]
"""
ENV = {"CRM_PASSWORD": "pw-s3cret", "CRM_KEY": "key-s3cret", "CRM_TENANT": "tenant-s3cret"}


def test_dry_run_masks_url_credentials_query_values_and_environment_values():
    ruleset = load_rules_text(RULES, env=ENV)
    (report,) = dry_run(ruleset, load_fixture("receipt-delivered.json"), load_settings({}))
    shown = json.dumps(report)
    for secret in ENV.values():
        assert secret not in shown
    (delivery,) = report["deliveries"]
    request = delivery["request"]
    assert request["url"] == "https://bot:****@crm.example/sms?api_key=****&v=****"
    assert request["headers"]["X-Tenant"] == "****"
    assert json.loads(request["body"])["status"] == "Delivered"
