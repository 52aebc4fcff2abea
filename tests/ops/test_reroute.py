"""relay.ops.reroute and relay.ops.rules_diff against the suite's real Redis, with a
publisher that records what it is asked to send (end to end with a real worker:
tests/worker/test_e2e_reroute.py)."""

from __future__ import annotations

import time

import pytest

from relay.errors import RulesError
from relay.events import Step, dead_letter, delivery_entry
from relay.ops import dead_letters
from relay.ops.reroute import reroute
from relay.ops.rules_diff import diff_rules, load_candidate
from relay.ops.search import EventQuery
from relay.rules import load_rules_text
from relay.settings import load_settings
from relay.state import Store, connect, keys
from tests.harness import relay_env
from tests.ops.test_dead_letters_and_history import Recorder
from tests.ops.test_search import NOW, ids, inbound, receipt, route

RULES = """
version: 1
destinations:
  crm: {type: log}
  crm-v2: {type: log}
  trace: {type: log}
routes:
  - name: failures
    match: {kind: delivery_receipt, status: [Failed]}
    to: [crm, trace]
  - name: inbound
    match: {kind: inbound_message, keyword: [HELP]}
    to: [trace]
"""


@pytest.fixture
def store(redis_server):
    client = connect(redis_server.url)
    yield Store(client, 86400, 3600)
    client.close()


@pytest.fixture
def ruleset():
    return load_rules_text(RULES, "rules.yaml")


def test_reroute_makes_new_deliveries_of_each_routing(store, ruleset):
    event = receipt(at=NOW - 5)
    first = route(store, event, ["failures"], ["crm"])  # as older rules routed it
    publisher = Recorder()
    report = reroute(store, publisher, ruleset, [event["id"], "01GONE"])
    assert report.not_found == ["01GONE"]
    (item,) = report.rerouted
    eid = event["id"]
    assert (item.routing, item.routes, item.destinations) == (2, ("failures",), ("crm", "trace"))
    assert item.delivery_ids == (f"{eid}:crm~2", f"{eid}:trace~2")
    assert item.rules_version == ruleset.version
    sent = [(name, args[0]["delivery_id"], args[0]["gen"]) for name, args in publisher.sent]
    assert sent == [("relay.deliver", f"{eid}:crm~2", 0), ("relay.deliver", f"{eid}:trace~2", 0)]
    assert all(args[0]["event"] == event for _, args in publisher.sent)  # the stored event
    entry = store.history(eid)[-1]
    assert entry["step"] == "rerouted" and entry["delivery_ids"] == list(item.delivery_ids)
    assert first[0]["delivery_id"] == f"{eid}:crm"  # the first routing's id is untouched
    again = reroute(store, publisher, ruleset, [eid]).rerouted[0]
    assert again.routing == 3 and again.delivery_ids[0] == f"{eid}:crm~3"
    # searchable under the new routing's destinations
    assert ids(store, EventQuery(destination="trace")) == [eid]


def test_a_reroute_trims_what_history_no_longer_keeps_from_the_sets_it_writes(
    redis_server, ruleset
):
    client = connect(redis_server.url)
    store = Store(client, 60, 3600)  # history kept a minute
    event = receipt(at=time.time())
    route(store, event, ["failures"], ["crm"])
    trace = keys.index("destination", "trace")  # written by the re-route alone
    client.zadd(trace, {"01GONE": (time.time() - 120) * 1000})  # older than history
    reroute(store, Recorder(), ruleset, [event["id"]])
    assert client.zscore(trace, event["id"]) is not None
    assert client.zscore(trace, "01GONE") is None
    assert 0 < client.ttl(trace) <= 60
    client.close()


def test_a_reroute_whose_publishing_fails_leaves_its_deliveries_in_the_outbox(store, ruleset):
    event = receipt(at=NOW - 5)
    route(store, event, ["failures"], ["crm"])
    eid = event["id"]

    def broker_down(name, args):
        raise ConnectionError("broker not answering")

    with pytest.raises(ConnectionError):
        reroute(store, Recorder(on_send=broker_down), ruleset, [eid])
    for did in (f"{eid}:crm~2", f"{eid}:trace~2"):  # the sweeper publishes them later
        spec = store.pending.get(f"deliver:{did}")
        assert spec["task"] == "relay.deliver" and spec["args"][0]["delivery_id"] == did
    assert store.history(eid)[-1]["step"] == "rerouted"
    assert store.index.state(eid) == "pending"


def test_a_rerouted_delivery_dead_lettered_is_replayed_under_its_own_id(store, ruleset):
    event = receipt(at=NOW - 5)
    route(store, event, ["failures"], ["crm"])
    publisher = Recorder()
    (item,) = reroute(store, publisher, ruleset, [event["id"]]).rerouted
    job = publisher.sent[0][1][0]
    store.deliveries.dead(
        job, dead_letter(job, "HTTP 400", []), [delivery_entry(job, Step.DEAD_LETTERED)]
    )
    assert store.index.state(event["id"]) == "dead"
    replayed = Recorder()
    dead_letters.replay(store, replayed, [item.delivery_ids[0]])
    ((name, (replay_job,)),) = replayed.sent
    assert replay_job["delivery_id"] == f"{event['id']}:crm~2"
    assert replay_job["destination"] == "crm"
    assert store.index.state(event["id"]) == "pending"


def test_a_reroute_that_matches_nothing_says_so_and_sends_nothing(store, ruleset):
    event = inbound("thanks", at=NOW - 5)
    route(store, event)
    publisher = Recorder()
    (item,) = reroute(store, publisher, ruleset, [event["id"]]).rerouted
    assert (item.routes, item.destinations, publisher.sent) == ((), (), [])
    assert store.history(event["id"])[-1]["step"] == "rerouted"
    assert store.index.state(event["id"]) == "unrouted"


def test_diff_groups_changes_and_is_pure(store, ruleset):
    failed = [receipt(at=NOW - 30 + i) for i in range(3)]
    help_ = inbound("help me", at=NOW - 10)
    chat = inbound("hello", at=NOW - 5)
    for event in failed:
        route(store, event, ["failures"], ["crm", "trace"])
    route(store, help_, ["inbound"], ["trace"])
    route(store, chat)
    candidate = load_rules_text(
        RULES.replace("to: [crm, trace]", "to: [crm-v2, trace]").replace("[HELP]", "[HELLO]"),
        "candidate.yaml",
    )
    before = store.client.dbsize()
    result = diff_rules(store, ruleset, candidate, since=3600, now=NOW)
    assert store.client.dbsize() == before  # writes nothing
    assert (result.examined, result.changed, result.complete) == (5, 5, True)
    assert [change.label for change in result.changes] == [
        "3 events: crm, trace → crm-v2, trace",
        "1 event: nothing → trace",
        "1 event: trace → nothing",
    ]
    assert result.changes[0].event_ids == tuple(e["id"] for e in reversed(failed))
    after = result.to_dict()["changes"][1]["after"]
    assert after == {"routes": ["inbound"], "destinations": ["trace"]}
    routes_only = load_rules_text(RULES.replace("name: failures", "name: failed"), "c.yaml")
    (change,) = diff_rules(store, ruleset, routes_only, since=3600, now=NOW).changes
    assert change.label == "3 events: crm, trace → crm, trace (routes failures → failed)"
    limited = diff_rules(store, ruleset, candidate, since=3600, limit=2, now=NOW)
    assert (limited.examined, limited.complete) == (2, False)
    exactly = diff_rules(store, ruleset, candidate, since=3600, limit=5, now=NOW)
    assert (exactly.examined, exactly.complete) == (5, True)  # the limit cut nothing
    window = diff_rules(store, ruleset, candidate, since=NOW - (NOW - 12), now=NOW)
    assert window.examined == 2  # accepted in the last 12 s


def test_load_candidate_reads_no_environment(monkeypatch):
    monkeypatch.setenv("TOKENISH", "gopher://hush-hush")
    settings = load_settings(relay_env("redis://127.0.0.1:1/0"))
    text = "version: 1\ndestinations:\n  a: {type: http, url: '${TOKENISH}'}\nroutes: []\n"
    assert load_candidate(text, settings).destinations["a"].url == "<TOKENISH>"
    with pytest.raises(RulesError) as refused:
        load_candidate(text.replace("routes: []", "routes: '${TOKENISH}'"), settings)
    (message,) = refused.value.errors
    assert message == "candidate.yaml:4: routes: expected a list of routes"
