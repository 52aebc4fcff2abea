"""The delivery state machine, in process: real Redis, a real HTTP receiver, a fake
scheduler that records what would be published instead of publishing it.

Each row: how the delivery's state is prepared, what the sink answers, what
``deliver_job`` returns, and what it leaves behind (scheduled task messages, a dead
letter, the pending outbox).
"""

from __future__ import annotations

import logging
import time

import pytest

from relay.events import job_of
from relay.ops import dead_letters
from relay.state import Store, keys
from relay.state.keys import deliver_member
from relay.worker.delivery import deliver_job
from relay.worker.routing import route_event
from tests.harness import in_process_runtime, pending_job
from tests.httpsink import Answer

MAX_HOP = 30.0

RULES = """
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 2s
    retry: {{attempts: 3, initial: 1s, max: 1s}}
routes: [{{name: all, to: [hook]}}]
"""


@pytest.fixture
def rig(redis_server, sink):
    runtime, store, scheduler = in_process_runtime(
        redis_server.url, RULES.format(url=sink.url("/hook")), MAX_HOP
    )
    job = pending_job(runtime, "hook", {"attempts": 3, "initial": 1.0, "max": 1.0})
    return runtime, store, scheduler, job, sink


def pending(store: Store, job: dict) -> bool:
    return store.pending.get(deliver_member(job["delivery_id"])) is not None


def test_a_fresh_delivery_is_sent_and_settled(rig):
    runtime, store, scheduler, job, sink = rig
    assert deliver_job(runtime, job) == "delivered"
    assert len(sink.requests) == 1 and scheduler.calls == []
    assert not pending(store, job)


def test_settling_a_delivery_is_one_transaction_with_no_script_lookup(rig):
    """A script registered on a redis-py pipeline costs a SCRIPT EXISTS round trip before
    every transaction; the settlement sends its script's text instead."""
    runtime, store, _, job, _ = rig
    assert deliver_job(runtime, job) == "delivered"  # the scripts are loaded once, here
    second = pending_job(runtime, "hook", job["retry"], "receipt-failed-invalid-address.json")
    store.client.config_resetstat()
    assert deliver_job(runtime, second) == "delivered"
    stats = store.client.info("commandstats")
    assert not [name for name in stats if name.startswith("cmdstat_script")], sorted(stats)
    assert stats["cmdstat_exec"]["calls"] == 1


def test_a_delivered_attempt_counts_its_outcome_in_the_controls_within_its_transaction(rig):
    """Begin, the gate, then one transaction that also counts the outcome in the
    destination's controls: three round trips, no Lua call of its own for the settlement."""
    runtime, store, _, job, _ = rig
    assert deliver_job(runtime, job) == "delivered"  # the scripts are loaded once, here
    second = pending_job(runtime, "hook", job["retry"], "receipt-failed-invalid-address.json")
    store.client.config_resetstat()
    assert deliver_job(runtime, second) == "delivered"
    stats = store.client.info("commandstats")
    sent = {name: stats[name]["calls"] for name in ("cmdstat_evalsha", "cmdstat_exec")}
    assert sent == {"cmdstat_evalsha": 2, "cmdstat_exec": 1}, sorted(stats)
    # … and counted all the same: both attempts in the statistics, no lease left behind
    assert store.controls.stats(["hook"])["hook"].attempts == 2
    assert store.controls.stats(["hook"])["hook"].succeeded == 2
    assert store.controls.inflight(["hook"])["hook"] == 0


def test_a_delivery_whose_controls_cannot_be_counted_is_delivered_all_the_same(rig, caplog):
    """The controls' script failing inside the delivered transaction (here its circuit key
    holds a string) is logged; the delivery is recorded and settled as if it had counted."""
    runtime, store, scheduler, job, sink = rig
    store.client.set(keys.destination("hook", "circuit"), "not a hash")
    with caplog.at_level(logging.WARNING, logger="relay.deliver"):
        assert deliver_job(runtime, job) == "delivered"
    assert [e["step"] for e in store.history(job["event"]["id"])][-1] == "delivered"
    assert not pending(store, job) and scheduler.calls == []
    assert store.deliveries.begin(job["delivery_id"], 0, 1.0) == ("done", 0)
    (warning,) = [r for r in caplog.records if "outcome not counted" in r.getMessage()]
    assert "WRONGTYPE" in warning.getMessage()


def test_a_copy_of_a_delivered_job_is_dropped_and_settled(rig):
    runtime, store, scheduler, job, sink = rig
    deliver_job(runtime, job)
    store.pending.register_now(deliver_member(job["delivery_id"]), "relay.deliver", [job])
    assert deliver_job(runtime, job) == "already_done"
    assert len(sink.requests) == 1 and not pending(store, job)


def test_an_older_generation_is_stale(rig):
    runtime, store, scheduler, job, sink = rig
    store.deliveries.next_generation(job["delivery_id"])  # a retry superseded generation 0
    assert deliver_job(runtime, job) == "stale"
    assert sink.requests == [] and scheduler.calls == []


def test_a_copy_while_another_holds_the_lock_is_busy_and_comes_back_later(rig):
    runtime, store, scheduler, job, sink = rig
    assert store.deliveries.begin(job["delivery_id"], 0, 60)[0] == "go"  # another copy runs
    assert deliver_job(runtime, job) == "busy"
    ((again, countdown),) = scheduler.calls
    assert again == job and 0 < countdown <= MAX_HOP
    assert sink.requests == []


def test_a_job_not_yet_due_waits_in_hops_no_longer_than_max_hop(rig):
    runtime, store, scheduler, job, sink = rig
    later = {**job, "not_before": time.time() + 1000}
    assert deliver_job(runtime, later) == "waiting"
    ((again, countdown),) = scheduler.calls
    assert again == later and countdown == MAX_HOP
    assert sink.requests == []


def test_a_transient_failure_schedules_the_next_generation(rig):
    runtime, store, scheduler, job, sink = rig
    sink.script(Answer(503))
    assert deliver_job(runtime, job) == "retry"
    ((follow_up, countdown),) = scheduler.calls
    assert follow_up["gen"] == 1 and follow_up["not_before"] > time.time()
    assert 0 < countdown <= 1.0
    assert store.pending.get(deliver_member(job["delivery_id"]))["args"] == [follow_up]
    assert deliver_job(runtime, job) == "stale"  # the old message, redelivered


def test_a_permanent_failure_is_a_dead_letter_with_its_attempt(rig):
    runtime, store, scheduler, job, sink = rig
    sink.script(Answer(400))
    assert deliver_job(runtime, job) == "dead_lettered"
    record = store.dead_letters.get(job["delivery_id"])
    assert [a["status"] for a in record["attempts"]] == [400]
    assert not pending(store, job) and scheduler.calls == []


def test_the_last_transient_failure_is_a_dead_letter(rig):
    runtime, store, scheduler, job, sink = rig
    sink.script(Answer(503), Answer(503), Answer(503))
    current = job
    for _ in range(2):
        assert deliver_job(runtime, current) == "retry"
        current = {**scheduler.calls[-1][0], "not_before": None}
    assert deliver_job(runtime, current) == "dead_lettered"
    record = store.dead_letters.get(job["delivery_id"])
    assert record["reason"].startswith("gave up after 3 attempts")
    assert len(record["attempts"]) == 3


def test_a_replayed_dead_letter_is_delivered_with_a_fresh_budget(rig):
    runtime, store, scheduler, job, sink = rig
    sink.script(Answer(400))
    deliver_job(runtime, job)
    record = store.dead_letters.get(job["delivery_id"])
    published = []

    class Publisher:
        def send_task(self, name, args):
            published.append((name, args))

    report = dead_letters.replay(store, Publisher(), [job["delivery_id"]])
    assert report.not_found == [] and len(published) == 1
    name, (replayed,) = published[0]
    assert name == "relay.deliver" and replayed == job_of(record, 1)
    assert deliver_job(runtime, replayed) == "delivered"
    assert store.dead_letters.get(job["delivery_id"]) is None


def test_routing_runs_the_first_attempt_inline_and_a_second_routing_is_dropped(rig):
    runtime, store, scheduler, job, sink = rig
    event = job["event"]
    assert route_event(runtime, event) == ["delivered"]
    assert scheduler.calls == []
    # a copy of the routing (taken over from a worker presumed dead) sends nothing again
    assert route_event(runtime, event) == ["already_done"]
    assert len(sink.requests) == 1
