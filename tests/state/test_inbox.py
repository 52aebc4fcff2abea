"""The inbox against the suite's real Redis: taking events holds them for the node."""

from __future__ import annotations

import pytest
from redis._parsers import _HiredisParser

from relay.state import Store, connect, keys
from relay.state.pending import NODE_TTL


def store_for(redis_server, node="node-a") -> Store:
    return Store(connect(redis_server.url), 3600, 3600, grace=60, node=node)


def event(event_id: str) -> dict:
    return {"id": event_id, "kind": "inbound_message", "source": "default"}


def test_taken_events_are_held_by_the_node_that_took_them(redis_server):
    store = store_for(redis_server)
    assert store.accept(["f1", "f2"], [event("E1"), event("E2")]) == [True, True]
    specs = store.take(10, timeout=1)
    assert [spec["args"][0]["id"] for spec in specs] == ["E1", "E2"]
    owned = store.client.smembers(keys.owned("node-a"))
    assert owned == {"route:E1", "route:E2"}
    assert store.inbox_size() == 0


def test_a_routing_task_that_does_not_decode_does_not_hold_up_the_others(redis_server):
    store = store_for(redis_server)
    store.accept(["f1", "f2"], [event("E1"), event("E2")])
    store.client.hset(keys.PENDING_TASKS, "route:E1", "{not json")
    specs = store.take(10, timeout=1)
    assert [spec["args"][0]["id"] for spec in specs] == ["E2"]
    # given up by this node: the pending outbox publishes it again once overdue
    assert store.client.smembers(keys.owned("node-a")) == {"route:E2"}
    assert store.client.zscore(keys.PENDING, "route:E1") is not None


def test_a_dead_nodes_work_is_taken_over_with_its_delivery_locks_dropped(redis_server):
    dead, alive = store_for(redis_server, "dead"), store_for(redis_server, "alive")
    dead.accept(["f1"], [event("E1")])
    dead.take(10, timeout=1)
    dead.pending.heartbeat(now=0)  # its last beat, long ago
    dead.pending.register_now("deliver:E1:hook", "relay.deliver", [{"delivery_id": "E1:hook"}])
    dead.client.sadd(keys.owned("dead"), "deliver:E1:hook")
    dead.client.set(keys.delivery("E1:hook", "lock"), "1")
    alive.pending.heartbeat()
    assert alive.pending.dead_nodes() == ["dead"]
    taken = dict(alive.pending.take_over("dead"))
    assert set(taken) == {"route:E1", "deliver:E1:hook"}
    assert not alive.client.exists(keys.delivery("E1:hook", "lock"))
    assert alive.pending.dead_nodes() == []


def test_liveness_counts_the_nodes_beating_within_node_ttl_and_the_freshest_beat(redis_server):
    assert store_for(redis_server).pending.liveness() == (0, None)  # no node ever
    now = 1_000_000.0
    stale, fresh, gone = (store_for(redis_server, n) for n in ("stale", "fresh", "gone"))
    stale.pending.heartbeat(now=now - NODE_TTL - 1)
    assert fresh.pending.liveness(now) == (0, now - NODE_TTL - 1)  # dead, but it beat then
    fresh.pending.heartbeat(now=now - 3)
    gone.pending.heartbeat(now=now - 1)
    gone.pending.leave()
    assert fresh.pending.liveness(now) == (1, now - 3)
    assert fresh.pending.dead_nodes(now) == ["gone", "stale"]  # the same line between them


def test_nodes_that_all_left_cleanly_have_no_freshest_beat(redis_server):
    node = store_for(redis_server)
    node.pending.heartbeat()
    node.pending.leave()
    assert node.pending.liveness() == (0, None)


def test_the_store_talks_to_redis_through_hiredis(redis_server):
    """redis-py falls back to its pure-Python parser without a word when hiredis is
    missing; the web's CPU per accepted request depends on it (README, Performance)."""
    connection = store_for(redis_server).client.connection_pool.get_connection()
    assert isinstance(connection._parser, _HiredisParser)


def test_waiting_for_the_inbox_takes_nothing_a_dying_worker_could_lose(redis_server):
    """Between the wait for the inbox and the call that makes an event the node's, the
    event stays in the inbox: a worker that dies in between loses nothing."""
    store = store_for(redis_server)
    store.accept(["f1"], [event("E1")])
    calls = []

    def take_then_die(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            return []  # the inbox looked empty: the worker waits on it
        raise SystemExit("killed")

    store._take = take_then_die
    with pytest.raises(SystemExit):
        store.take(10, timeout=1)
    assert len(calls) == 2
    assert store.client.lrange(keys.INBOX, 0, -1) == ["E1"]
