"""The destination controls' Lua primitives against the suite's real Redis: the token
bucket's refill and the spread of its waiters, lease expiry, the circuit's single
half-open probe, pauses, parking, and the rolling statistics."""

from __future__ import annotations

import time

import pytest

from relay.state import connect
from relay.state.backlog import counts
from relay.state.client import dumps
from relay.state.controls import Controls
from relay.state.keys import PENDING_TASKS, deliver_member

#: seconds of a lease, a cooldown or a pause that the calls of a test must fit in: far
#: more than a few Redis calls take, even on a loaded 2-core machine; the tests then wait
#: out what Redis says is left of it, not a fixed time
LEASE = COOLDOWN = PAUSE = 1.0


@pytest.fixture
def controls(redis_client, redis_server):
    return Controls(connect(redis_server.url))


def test_the_bucket_holds_one_token_that_refills_every_interval(controls):
    rate = (10, 1.0)  # one every 100 ms
    assert controls.gate("crm", "a", 10, rate=rate).go
    refused = controls.gate("crm", "b", 10, rate=rate)
    assert refused.reason == "rate_limit"
    assert 0.0 < refused.wait <= 0.1
    time.sleep(refused.wait + 0.01)
    assert controls.gate("crm", "b", 10, rate=rate).go


def test_refused_callers_get_consecutive_slots(controls):
    rate = (10, 1.0)
    assert controls.gate("crm", "first", 10, rate=rate).go
    waits = [controls.gate("crm", f"{i}", 10, rate=rate).wait for i in range(5)]
    # each waiter is told its own turn, 100 ms after the one before
    for earlier, later in zip(waits, waits[1:], strict=False):
        assert later - earlier == pytest.approx(0.1, abs=0.01)


def test_no_more_than_count_per_window_under_contention(controls):
    rate = (20, 1.0)
    taken = []  # (before, after) the call of each granted attempt
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        before = time.monotonic()
        if controls.gate("crm", "x", 10, rate=rate).go:
            taken.append((before, time.monotonic()))
    # a bucket of one token refilled every 50 ms: grants are at least 50 ms apart. Each was
    # made (Redis's clock) between its call's start and end, so the end of one call and the
    # start of the one before it are at least that far apart however long the calls took
    # on a loaded machine (1 ms: Redis's clock against ours); hence any one-second window
    # sees at most count + 1
    for (earlier, _), (_, later) in zip(taken, taken[1:], strict=False):
        assert later - earlier >= 0.05 - 0.001
    assert len(taken) >= 2


def test_a_concurrency_lease_is_freed_by_release_or_by_its_expiry(controls):
    assert controls.gate("crm", "a", 10, concurrency=2).go
    assert controls.gate("crm", "b", LEASE, concurrency=2).go
    full = controls.gate("crm", "c", 10, concurrency=2)
    assert full.reason == "concurrency"
    assert 0 < full.wait <= LEASE  # the earliest lease's end
    controls.release("crm", "a")
    assert controls.gate("crm", "c", 10, concurrency=2).go
    waiting = controls.gate("crm", "d", 10, concurrency=2)
    assert waiting.reason == "concurrency"
    time.sleep(waiting.wait + 0.01)  # b's holder died: its lease runs out
    assert controls.gate("crm", "d", 10, concurrency=2).go
    assert controls.inflight(["crm"]) == {"crm": 2}


def test_a_refused_check_commits_nothing(controls):
    # concurrency passes, the rate refuses: no lease is left behind
    assert controls.gate("crm", "a", 10, rate=(1, 10.0)).go
    assert controls.gate("crm", "b", 10, rate=(1, 10.0), concurrency=1).reason == "rate_limit"
    assert controls.inflight(["crm"]) == {"crm": 0}


def _fail(controls, did, times=1, outcome="transient"):
    return [
        controls.settle("crm", did, outcome, 0.01, "503", failures=3, cooldown=COOLDOWN)
        for _ in range(times)
    ]


def _after_the_cooldown(controls):
    """Wait as long as Redis says the open circuit's cooldown has left."""
    refused = controls.gate("crm", "asking", 5, breaker=True)
    assert refused.reason == "circuit"
    time.sleep(refused.wait + 0.01)


def test_the_circuit_opens_after_consecutive_transient_failures(controls):
    assert _fail(controls, "a", 2) == ["", ""]
    controls.settle("crm", "a", "ok", 0.01, failures=3, cooldown=COOLDOWN)  # resets
    assert _fail(controls, "a", 2) == ["", ""]
    assert _fail(controls, "a") == ["opened"]
    closed = controls.gate("crm", "b", 10, breaker=True)
    assert closed.reason == "circuit" and 0 < closed.wait <= COOLDOWN
    assert controls.circuits(["crm"])["crm"].state == "open"


def test_after_the_cooldown_exactly_one_probe_goes_through(controls):
    _fail(controls, "a", 3)
    _after_the_cooldown(controls)
    verdicts = [controls.gate("crm", f"{i}", 5, breaker=True) for i in range(5)]
    assert [v.go for v in verdicts] == [True, False, False, False, False]
    assert verdicts[0].probe
    assert {v.reason for v in verdicts[1:]} == {"circuit"}
    assert controls.circuits(["crm"])["crm"].state == "half-open"
    # an attempt started before the circuit opened changes nothing
    assert _fail(controls, "straggler") == [""]
    assert controls.settle("crm", "0", "ok", 0.01, failures=3, cooldown=COOLDOWN) == "closed"
    assert controls.gate("crm", "1", 5, breaker=True).go
    assert controls.circuits(["crm"])["crm"].state == "closed"


def test_deliveries_refused_by_the_circuit_are_parked(controls, redis_client):
    for did in ("b", "c"):
        spec = dumps({"task": "relay.deliver", "args": []})
        redis_client.hset(PENDING_TASKS, deliver_member(did), spec)
    _fail(controls, "a", 3)
    assert controls.gate("crm", "b", 5, breaker=True).reason == "circuit"
    assert controls.gate("crm", "c", 5, breaker=True, rate=(1, 1.0)).reason == "circuit"
    assert controls.gate("crm", "d", 5, rate=(1, 1.0)).go  # no breaker: not gated
    assert sorted(did for did, _ in controls.unpark("crm")) == ["b", "c"]  # delivery ids
    assert controls.unpark("crm") == []


def test_a_failed_probe_reopens_for_another_cooldown(controls):
    _fail(controls, "a", 3)
    _after_the_cooldown(controls)
    assert controls.gate("crm", "p", 5, breaker=True).probe
    assert _fail(controls, "p") == ["reopened"]
    refused = controls.gate("crm", "q", 5, breaker=True)
    assert refused.reason == "circuit" and refused.wait > COOLDOWN / 2  # a new cooldown
    time.sleep(refused.wait + 0.01)
    assert controls.gate("crm", "q", 5, breaker=True).probe


def test_a_probe_whose_lease_ran_out_is_replaced(controls):
    _fail(controls, "a", 3)
    _after_the_cooldown(controls)
    assert controls.gate("crm", "p", LEASE, breaker=True).probe  # then its worker died
    refused = controls.gate("crm", "q", LEASE, breaker=True)
    assert refused.reason == "circuit"
    time.sleep(refused.wait + 0.01)  # the probe's lease is over
    assert controls.gate("crm", "q", LEASE, breaker=True).probe


def test_a_permanent_failure_is_an_answer_it_resets_the_count(controls):
    _fail(controls, "a", 2)
    _fail(controls, "a", outcome="permanent")
    assert _fail(controls, "a", 2) == ["", ""]
    assert controls.circuits(["crm"])["crm"].state == "closed"


def test_a_pause_stops_everything_until_resumed_or_expired(controls):
    controls.pause("crm")
    assert controls.gate("crm", "a", 5) == controls.gate("crm", "a", 5)
    verdict = controls.gate("crm", "a", 5)
    assert verdict.reason == "paused" and verdict.wait is None
    assert controls.paused(["crm", "other"])["crm"].until is None
    controls.resume("crm")
    assert controls.gate("crm", "a", 5).go
    controls.pause("crm", PAUSE)
    timed = controls.gate("crm", "b", 5)
    assert timed.reason == "paused" and 0 < timed.wait <= PAUSE
    time.sleep(timed.wait + 0.01)
    assert controls.gate("crm", "b", 5).go
    assert controls.paused(["crm"]) == {}


def test_resume_hands_back_the_parked_deliveries_still_pending(controls, redis_client):
    spec = {"task": "relay.deliver", "args": [{"delivery_id": "a", "destination": "crm"}]}
    redis_client.hset(PENDING_TASKS, deliver_member("a"), dumps(spec))
    controls.pause("crm")
    assert controls.gate("crm", "a", 5).reason == "paused"  # parked
    assert controls.gate("crm", "settled-meanwhile", 5).reason == "paused"
    assert controls.resume("crm") == [("a", spec)]
    assert controls.resume("crm") == []
    assert counts(redis_client) == {"crm": 1}  # parked, still pending


def test_a_parked_delivery_that_goes_leaves_the_parked_set(controls, redis_client):
    # a timed pause ends with no resume to empty the parked set: each delivery that goes
    # takes itself out of it, so pauses after pauses do not pile members up in Redis
    controls.pause("crm", PAUSE)
    waits = [controls.gate("crm", did, 5) for did in ("a", "b")]
    assert [verdict.reason for verdict in waits] == ["paused", "paused"]
    assert redis_client.scard("relay:dest:crm:parked") == 2
    time.sleep(waits[-1].wait + 0.01)
    assert controls.gate("crm", "a", 5).go
    assert controls.gate("crm", "b", 5, concurrency=1).go
    assert redis_client.exists("relay:dest:crm:parked") == 0
    # refused by the concurrency limit: not parked, and a parked one stays parked
    controls.pause("crm", PAUSE)
    paused = controls.gate("crm", "c", 5)
    assert paused.reason == "paused"
    time.sleep(paused.wait + 0.01)
    assert controls.gate("crm", "c", 5, concurrency=1).reason == "concurrency"
    assert redis_client.smembers("relay:dest:crm:parked") == {deliver_member("c")}


def test_statistics_roll_per_minute(controls):
    for latency in [0.02] * 18 + [0.7, 3.0]:
        controls.settle("crm", "a", "ok", latency)
    controls.settle("crm", "b", "transient", 0.02, "HTTP 503")
    stats = controls.stats(["crm", "quiet"])
    assert stats["crm"].attempts == 21 and stats["crm"].succeeded == 20
    assert stats["crm"].p95 == 1.0  # the 20th of 21 latencies is in the 1-second bucket
    assert stats["quiet"].attempts == 0 and stats["quiet"].p95 is None
    assert controls.last_errors(["crm"])["crm"]["error"] == "HTTP 503"
    later = controls.stats(["crm"], now=time.time() + 6 * 60)
    assert later["crm"].attempts == 0
