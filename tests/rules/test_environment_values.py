"""Values from the environment: a file read without it gets placeholders, and no message
of the loader carries a value it read from it."""

from __future__ import annotations

import pytest

from relay.errors import RulesError
from relay.rules import load_rules_text
from relay.rules.interpolation import PLACEHOLDERS

CANDIDATE = """\
version: 1
destinations:
  crm: {type: http, url: "${CRM_URL}", headers: {Authorization: "Bearer ${CRM_TOKEN}"}}
  failures: {type: http, url: "${FAILURES_URL:-http://127.0.0.1:9009/failures}"}
routes:
  - {name: "${RELAY_ADMIN_TOKEN}", to: crm}
  - {name: "x${RELAY_REDIS_URL}", to: failures}
"""
ENV = {
    "RELAY_ADMIN_TOKEN": "admin-s3cret",
    "RELAY_REDIS_URL": "redis://:redis-s3cret@localhost:6379/0",
    "CRM_URL": "https://crm.example/hook",
    "CRM_TOKEN": "crm-s3cret",
}


def test_read_without_the_environment_a_reference_is_a_placeholder_and_a_default_is_taken():
    ruleset = load_rules_text(CANDIDATE, env=PLACEHOLDERS)
    assert [route.name for route in ruleset.routes] == [
        "<RELAY_ADMIN_TOKEN>",
        "x<RELAY_REDIS_URL>",
    ]
    assert ruleset.destinations["crm"].url == "<CRM_URL>"  # compared, never sent
    assert ruleset.destinations["failures"].url == "http://127.0.0.1:9009/failures"
    assert ruleset.interpolated == frozenset()


def test_a_placeholder_where_a_number_is_needed_says_how_to_give_it_a_value():
    text = CANDIDATE.replace("to: failures}", "to: failures, retry: {attempts: '${ATTEMPTS}'}}")
    with pytest.raises(RulesError) as caught:
        load_rules_text(text, "candidate.yaml", env=PLACEHOLDERS)
    assert caught.value.errors == [
        "candidate.yaml:7: routes[1].retry.attempts: expected a whole number of at least 1, "
        "got '<ATTEMPTS>' (${ATTEMPTS} is <ATTEMPTS> here: the environment is not read; "
        "give it a default to check it, ${ATTEMPTS:-…})"
    ]


@pytest.mark.parametrize(
    "secret", ["ftp://bot:s3cret@crm.example/hook", "ftp://it's\\a\nsecret", "ftp://é-s3cret"]
)
def test_no_message_of_the_loader_carries_a_value_from_the_environment(secret):
    text = CANDIDATE.replace("${CRM_URL}", "${CRM_URL} ")
    with pytest.raises(RulesError) as caught:
        load_rules_text(text, env={**ENV, "CRM_URL": secret})
    (message,) = caught.value.errors
    assert message.startswith("rules.yaml:3: destinations.crm.url: expected an http:// or https")
    assert "****" in message
    for part in ("s3cret", "secret"):
        assert part not in message
