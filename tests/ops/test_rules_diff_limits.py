"""What a rules diff may cost and show (relay.ops.rules_diff), against the suite's real
Redis: a time budget that answers with what it has, a candidate's caps, and route names
of the rules in force that came from the environment."""

from __future__ import annotations

import pytest

from relay.errors import RulesError
from relay.ops.rules_diff import CANDIDATE_LIMITS, diff_rules, load_candidate
from relay.rules import load_rules_text
from relay.settings import load_settings
from relay.state import Store, connect
from tests.harness import fresh_db_url, relay_env
from tests.ops.test_search import NOW, inbound, receipt, route

RULES = """\
version: 1
destinations: {crm: {type: log}, trace: {type: log}}
routes:
  - {name: "all-${ROUTE_SUFFIX}", to: [trace]}
"""
CANDIDATE = """\
version: 1
destinations: {crm: {type: log}, trace: {type: log}}
routes:
  - {name: everything, to: [trace]}
"""


@pytest.fixture
def store(redis_server):
    client = connect(fresh_db_url(redis_server))
    store = Store(client, 86400, 3600)
    for at in (NOW - 30, NOW - 20, NOW - 10):
        route(store, receipt(at=at), ["all"], ["trace"])
    route(store, inbound("HELP", at=NOW - 5), ["all"], ["trace"])
    yield store
    client.close()


@pytest.fixture
def settings():
    return load_settings(relay_env("redis://127.0.0.1:1/0"))


def test_a_diff_whose_time_runs_out_answers_with_what_it_examined(store, settings):
    current = load_rules_text(RULES, env={"ROUTE_SUFFIX": "x"})
    candidate = load_candidate(CANDIDATE, settings)
    spent = diff_rules(store, current, candidate, since=3600, now=NOW, budget=0.0)
    assert (spent.examined, spent.truncated, spent.complete) == (0, True, False)
    assert spent.to_dict()["truncated"] is True
    whole = diff_rules(store, current, candidate, since=3600, now=NOW, budget=60.0)
    assert (whole.examined, whole.changed, whole.truncated, whole.complete) == (4, 4, False, True)


def test_route_names_the_rules_in_force_took_from_the_environment_are_masked(store, settings):
    current = load_rules_text(RULES, env={"ROUTE_SUFFIX": "s3cret-suffix"})
    candidate = load_candidate(CANDIDATE, settings)
    (change,) = diff_rules(store, current, candidate, since=3600, now=NOW).changes
    assert change.label == "4 events: trace → trace (routes all-**** → everything)"
    assert change.to_dict()["before"]["routes"] == ["all-****"]


def test_a_candidate_larger_than_allowed_is_refused_before_it_is_parsed(settings):
    size = CANDIDATE_LIMITS.size
    assert size is not None
    text = CANDIDATE + "#" * (size - len(CANDIDATE) + 1)
    with pytest.raises(RulesError) as refused:
        load_candidate(text, settings)
    assert refused.value.errors == [
        f"candidate.yaml:1: file: {size + 1:,} bytes: more than the {size:,} allowed"
    ]


def test_a_candidate_with_more_template_text_than_allowed_is_refused_at_the_template(settings):
    most = CANDIDATE_LIMITS.template_text
    assert most is not None
    text = "{{ event.kind }}" + "x" * (most // 2)
    candidate = CANDIDATE.replace(
        "trace: {type: log}}",
        f"trace: {{type: log, text: '{text}'}}, more: {{type: log, text: '{text}y'}}}}",
    )
    with pytest.raises(RulesError) as refused:
        load_candidate(candidate, settings)
    assert refused.value.errors == [
        f"candidate.yaml:2: destinations.more.text: more than {most:,} characters of "
        "template text in all"
    ]
    assert load_candidate(candidate.replace(f"{text}y", text), settings)  # each text once
