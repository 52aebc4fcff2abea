"""The gate's accounts in process when publishing fails: real Redis, a real HTTP receiver,
a scheduler that records what would be published, or fails as a broker that is away."""

from __future__ import annotations

import time

import pytest

from relay.state.keys import deliver_member
from relay.worker.delivery import deliver_job
from tests.harness import in_process_runtime, pending_job
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
    runtime, store, scheduler = in_process_runtime(
        redis_server.url, RULES.format(url=sink.url("/crm"))
    )

    def job() -> dict:
        return pending_job(runtime, "crm", {"attempts": 5, "initial": 1, "max": 1})

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
