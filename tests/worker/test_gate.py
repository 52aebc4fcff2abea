"""The gate's accounts in process when publishing fails: real Redis, a real HTTP receiver,
a scheduler that records what would be published, or fails as a broker that is away."""

from __future__ import annotations

import time

import pytest

from relay.events import new_job
from relay.parsing import build_events
from relay.rules import load_rules_text
from relay.rules.reloader import StaticRules
from relay.settings import load_settings
from relay.state import Store, connect
from relay.state.keys import deliver_member
from relay.worker.delivery import deliver_job
from relay.worker.runtime import Runtime
from tests.conftest import load_fixture
from tests.harness import Scheduler
from tests.httpsink import Answer

RULES = """
version: 1
destinations:
  crm:
    type: http
    url: "{url}"
    retry: {{attempts: 5, initial: 1s, max: 1s}}
    circuit_breaker: {{failures: 1, cooldown: 200ms}}
routes: [{{name: all, to: [crm]}}]
"""


@pytest.fixture
def rig(redis_server, sink):
    settings = load_settings({"RELAY_REDIS_URL": redis_server.url})
    store = Store(connect(redis_server.url), 3600, 3600, grace=60, node="test-node")
    ruleset = load_rules_text(RULES.format(url=sink.url("/crm")))
    scheduler = Scheduler()
    runtime = Runtime(settings, store, StaticRules(ruleset), scheduler, 30.0)

    def job() -> dict:
        (event,), _ = build_events(load_fixture("receipt-delivered.json"), "default", frozenset())
        retry = {"attempts": 5, "initial": 1, "max": 1}
        made = new_job(event, "all", "crm", ruleset.version, retry)
        store.pending.register_now(deliver_member(made["delivery_id"]), "relay.deliver", [made])
        return made

    return runtime, store, scheduler, job


def test_a_probe_that_closes_the_circuit_is_delivered_when_the_broker_is_away(rig, sink):
    runtime, store, scheduler, job = rig
    sink.script(Answer(503))
    assert deliver_job(runtime, job()) == "retry"  # one transient failure opens it
    assert store.controls.circuits(["crm"])["crm"].state == "open"
    assert deliver_job(runtime, job()) == "waiting:circuit"  # parked
    time.sleep(0.25)
    # the probe succeeds and closes the circuit; publishing the parked deliveries fails:
    # the probe's own outcome is recorded all the same (they look again by themselves)
    scheduler.broken = True
    probe = job()
    assert deliver_job(runtime, probe) == "delivered"
    assert store.controls.circuits(["crm"])["crm"].state == "closed"
    assert [e["step"] for e in store.history(probe["event"]["id"])][-1] == "delivered"
    assert store.pending.get(deliver_member(probe["delivery_id"])) is None  # settled
    assert len(sink.requests) == 2
