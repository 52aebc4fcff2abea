"""The primary watch and the reconciliation after a failover (relay.worker.failover), on
real Redis servers: another server answering (a TCP forwarder moved from one to the other,
as a managed endpoint moves) holds take-overs back and makes the node publish again what
it owns but works on nowhere, at the delivery's live generation."""

from __future__ import annotations

import base64
import json
import threading
from urllib.parse import urlsplit

import pytest
import redis

from relay.cli.embedded import EmbeddedRedis
from relay.ops.broker import DELIVER_QUEUE, ROUTE_QUEUE, make_celery
from relay.settings import load_settings
from relay.state import Store, connect
from relay.state import keys as state_keys
from relay.state.pending import NODE_TTL
from relay.worker.app import make_worker_app
from relay.worker.failover import PrimaryWatch, reconcile
from relay.worker.ownership import Heartbeat, Holdings, task_id
from relay.worker.sweeper import sweep_once
from tests.forwarder import TcpForwarder
from tests.harness import fresh_db_url


@pytest.fixture
def other_redis(redis_server, tmp_path):
    """A second server, with the suite's server's password (as a replica promoted in its
    place would have)."""
    server = EmbeddedRedis(tmp_path / "other", appendonly=False).start()
    password = redis.Redis.from_url(redis_server.url).connection_pool.connection_kwargs["password"]
    with redis.Redis.from_url(server.url) as client:
        client.config_set("requirepass", password)
    yield server
    server.stop()


def store_on(url: str, node: str = "node-a") -> Store:
    return Store(connect(url), 3600, 3600, grace=60, node=node)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 6379


def through(forwarder: TcpForwarder, url: str) -> str:
    """``url`` (a redis:// URL with a password) pointed at the forwarder."""
    parts = urlsplit(url)
    return parts._replace(netloc=f":{parts.password}@127.0.0.1:{forwarder.port}").geturl()


def test_another_server_answering_holds_take_overs_back(redis_server, other_redis):
    with TcpForwarder(address(redis_server.url)) as endpoint:
        store = store_on(through(endpoint, redis_server.url))
        watch = PrimaryWatch(store, threading.Event(), now=0.0)
        assert watch.check(now=100.0) is False  # the first look: nothing to compare with
        assert watch.steady(now=100.0)  # steady since 0.0: long enough
        endpoint.move(address(other_redis.url))
        endpoint.drop_all()  # the pool reconnects, through the endpoint, to the other
        assert watch.check(now=200.0) is True
        assert not watch.steady(now=200.0 + NODE_TTL - 1)
        assert watch.steady(now=200.0 + NODE_TTL)
        assert watch.check(now=201.0) is False


def test_a_failed_call_makes_the_next_look_reconcile(redis_server):
    interrupted = threading.Event()
    store = store_on(redis_server.url)
    watch = PrimaryWatch(store, interrupted, now=0.0)
    assert watch.check() is False
    interrupted.set()  # e.g. the intake lost a take's answer
    assert watch.check() is True
    assert watch.check() is False


def test_the_sweeper_takes_no_node_over_while_told_not_to(redis_server):
    url = fresh_db_url(redis_server)
    dead = store_on(url, node="dead-node")
    dead.pending.register_now("route:E1", "relay.route", [{"id": "E1"}])
    dead.client.sadd(state_keys.owned("dead-node"), "route:E1")
    dead.pending.heartbeat(now=1.0)  # silent for ages
    celery = make_celery(load_settings({"RELAY_REDIS_URL": url}))
    survivor = store_on(url, node="survivor")
    assert sweep_once(celery, survivor, take_over=False) == 0
    assert dead.client.zscore(state_keys.NODES, "dead-node") == 1.0
    survivor.client.delete(state_keys.lock("sweeper"))
    assert sweep_once(celery, survivor, take_over=True) == 1
    assert queued(survivor.client, ROUTE_QUEUE) == [("route:E1", "relay.route", [{"id": "E1"}])]


def test_reconcile_publishes_what_the_node_owns_and_holds_nowhere(redis_server):
    url = fresh_db_url(redis_server)
    store = store_on(url)
    job = {"delivery_id": "E2:app", "gen": 0, "destination": "app", "event": {"id": "E2"}}
    for member, task, args in (
        ("route:E1", "relay.route", [{"id": "E1"}]),
        ("deliver:E2:app", "relay.deliver", [job]),
        ("deliver:E3:app", "relay.deliver", [{**job, "delivery_id": "E3:app"}]),
    ):
        store.pending.register_now(member, task, args)
        store.client.sadd(state_keys.owned("node-a"), member)
    store.client.sadd(state_keys.owned("node-a"), "deliver:settled:app")  # settled meanwhile
    # the next generation was counted, and the write that registered it lost
    store.client.set(state_keys.delivery("E2:app", "gen"), 3)
    holdings = Holdings()
    holdings.hold("deliver:E3:app")  # an intake thread is on it
    celery = make_celery(load_settings({"RELAY_REDIS_URL": url}))
    watch = PrimaryWatch(store, threading.Event())
    assert reconcile(celery, watch, holdings) == 2
    assert queued(store.client, ROUTE_QUEUE) == [("route:E1", "relay.route", [{"id": "E1"}])]
    assert queued(store.client, DELIVER_QUEUE) == [
        ("deliver:E2:app", "relay.deliver", [{**job, "gen": 3}])
    ]
    assert store.client.smembers(state_keys.owned("node-a")) == {"deliver:E3:app"}


def queued(client: redis.Redis, queue: str) -> list[tuple[str, str, list]]:
    """The task messages waiting in ``queue`` (kombu's Redis transport): member, task name
    and arguments of each, oldest first."""
    found = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        headers = message["headers"]
        found.append((headers["id"].split("|")[0], headers["task"], args))
    return found


def test_a_task_the_broker_does_not_take_is_held_here_and_published_again(redis_server):
    """The broker gone (or kombu's channel torn down by a failover) when a retry is
    scheduled: no exception for the delivery code, the member held by this node in Redis,
    and the primary watch told to reconcile (which publishes it once the broker answers)."""
    url = fresh_db_url(redis_server)
    settings = load_settings({"RELAY_REDIS_URL": url, "RELAY_BROKER_URL": "redis://127.0.0.1:9/0"})
    app = make_worker_app(settings)
    job = {"delivery_id": "E9:app", "gen": 1, "destination": "app", "event": {"id": "E9"}}
    app.store.pending.register_now("deliver:E9:app", "relay.deliver", [job])
    app.schedule_delivery(job, 5.0)
    assert app.store.client.smembers(state_keys.owned(app.node_id)) == {"deliver:E9:app"}
    assert app.runtime.interrupted.is_set()


def test_a_heartbeat_that_fails_keeps_the_task_messages_for_the_next(redis_server):
    """Members of task messages received just before a failover are recorded by the first
    heartbeat that reaches Redis, not lost with the one that did not."""
    url = fresh_db_url(redis_server)
    with TcpForwarder(address(url)) as endpoint:
        store = store_on(through(endpoint, url))
        store.pending.register_now("deliver:E4:app", "relay.deliver", [{"id": "E4"}])
        heartbeat = Heartbeat(store)
        heartbeat.received(task_id("deliver:E4:app"))
        endpoint.move(("127.0.0.1", 9))  # nothing listens there: no Redis
        endpoint.drop_all()
        with pytest.raises(redis.RedisError):
            heartbeat.beat()
        endpoint.move(address(url))
        heartbeat.beat()
        assert store.client.smembers(state_keys.owned("node-a")) == {"deliver:E4:app"}
