"""Each destination's backlog, counted with the outbox: read without reading the outbox,
and equal to a recount of it through every way a delivery comes and goes."""

from __future__ import annotations

import uuid

import pytest
import redis

from relay.events import Step, dead_letter, history_entry, new_attempt, new_job
from relay.ops.dead_letters import replay
from relay.ops.destinations import list_destinations
from relay.parsing import build_events
from relay.rules.loader import load_rules_text
from relay.state import Store, connect, keys
from relay.state.client import dumps, loads
from tests.conftest import load_fixture

RETRY = {"attempts": 3, "initial": 1.0, "max": 5.0}
RULES = """version: 1
destinations:
  crm: {type: log}
  trace: {type: log}
  helpdesk: {type: log}
routes:
  - {name: all, to: [crm, trace]}
"""


@pytest.fixture
def node_store(redis_server):
    """A Store of worker node n1 (it holds what it routes)."""
    client = connect(redis_server.url)
    yield Store(client, 3600, 3600, node="n1")
    client.connection_pool.disconnect()


def event(number: int):
    payload = load_fixture("receipt-delivered.json")
    payload["deliveryInfoNotification"]["transid"] = f"t-{uuid.uuid4().hex}"
    (found,), _ = build_events(payload, "default", set())
    return {**found, "id": f"E{number:05d}{uuid.uuid4().hex[:6]}"}


def route(store: Store, item, destinations=("crm", "trace")):
    jobs = [new_job(item, "all", name, "v1", RETRY) for name in destinations]
    entries = [history_entry(Step.RECEIVED, rules_version="v1")]
    store.route(item, entries, jobs, [5.0] * len(jobs))
    return jobs


def recount(client: redis.Redis) -> dict[str, int]:
    """What the outbox holds, read whole: pending deliveries per destination."""
    counts: dict[str, int] = {}
    for member, raw in client.hgetall(keys.PENDING_TASKS).items():
        if member.startswith("deliver:"):
            name = loads(raw)["args"][0]["destination"]
            counts[name] = counts.get(name, 0) + 1
    return counts


def commands_during(url: str, action) -> list[str]:
    """Every command the Redis at ``url`` ran while ``action`` ran (MONITOR)."""
    watcher = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
    end = f"end-{uuid.uuid4().hex}"
    seen = []
    with watcher.monitor() as monitor:
        action()
        redis.Redis.from_url(url).echo(end)
        while end not in (command := monitor.next_command()["command"]):
            seen.append(command)
    watcher.close()
    return seen


def test_the_backlog_is_read_without_reading_the_outbox(node_store, redis_server, redis_client):
    destinations = load_rules_text(RULES).destinations
    list_destinations(node_store, destinations)  # a Redis that never had an outbox yet
    for number in range(50):
        route(node_store, event(number))
    commands = commands_during(
        redis_server.url, lambda: list_destinations(node_store, destinations)
    )
    assert commands, "MONITOR saw nothing"
    touched = [c for c in commands if "relay:pending" in c]
    assert touched == [], f"the backlog read touched the outbox: {touched[:3]}"
    statuses = {s.name: s.backlog for s in list_destinations(node_store, destinations)}
    assert statuses == {"crm": 50, "trace": 50, "helpdesk": 0}


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list]] = []

    def send_task(self, name: str, args: list) -> None:
        self.sent.append((name, args))


def test_the_counts_follow_every_way_a_delivery_comes_and_goes(
    node_store, redis_server, redis_client
):
    store = node_store

    def check(expected: dict[str, int]) -> None:
        assert store.pending.backlog() == expected
        assert recount(redis_client) == expected

    first, second = event(1), event(2)
    a_crm, a_trace = route(store, first)
    check({"crm": 1, "trace": 1})
    route(store, first)  # routed again (a second copy of its task): a duplicate
    (b_crm,) = route(store, second, ["crm"])
    check({"crm": 2, "trace": 1})

    attempt = new_attempt(1, "2024-01-01T00:00:00Z", "ok", 200, None, 0.01)
    store.deliveries.delivered(a_trace, attempt, [])
    store.deliveries.delivered(a_trace, attempt, [])  # settled twice
    check({"crm": 2})

    failed = new_attempt(1, "2024-01-01T00:00:00Z", "transient", 503, "HTTP 503", 0.01)
    store.deliveries.failed(a_crm, failed, [], retry_at=1e10)  # registered again: a retry
    check({"crm": 2})

    fallback = new_job(first, "all", "helpdesk", "v1", RETRY)
    fallback["delivery_id"] = a_crm["delivery_id"] + ":fallback"
    record = dead_letter(a_crm, "HTTP 503 after 3 attempts", [failed])
    store.deliveries.dead(a_crm, record, [], fallback=fallback)
    check({"crm": 1, "helpdesk": 1})

    publisher = Publisher()
    replay(store, publisher, [a_crm["delivery_id"]])
    assert [name for name, _ in publisher.sent] == ["relay.deliver"]
    check({"crm": 2, "helpdesk": 1})

    store.controls.pause("crm")  # parked: still pending, still counted
    assert store.controls.gate("crm", "deliver:" + b_crm["delivery_id"], 5).reason == "paused"
    check({"crm": 2, "helpdesk": 1})
    store.controls.resume("crm")

    other = Store(store.client, 3600, 3600, node="n2")
    taken = other.pending.take_over("n1")  # n1 died: its work is n2's now
    assert {member for member, _ in taken} >= {"deliver:" + b_crm["delivery_id"]}
    check({"crm": 2, "helpdesk": 1})

    other.deliveries.delivered(b_crm, attempt, [])
    other.deliveries.skipped(fallback, [])
    replayed = {**a_crm, "gen": store.deliveries.generation(a_crm["delivery_id"])}
    other.deliveries.delivered(replayed, attempt, [])
    check({})
    assert redis_client.hlen(keys.PENDING_DESTINATIONS) == 0


def test_an_outbox_written_before_the_counts_is_counted_once(store, redis_client):
    # as relay wrote the outbox before: the task alone, no destination recorded, no counts
    for number, name in enumerate(["crm", "crm", "trace"]):
        job = new_job(event(number), "all", name, "v1", RETRY)
        spec = dumps({"task": "relay.deliver", "args": [job]})
        redis_client.hset(keys.PENDING_TASKS, "deliver:" + job["delivery_id"], spec)
        redis_client.zadd(keys.PENDING, {"deliver:" + job["delivery_id"]: 1e10})
    redis_client.hset(keys.PENDING_TASKS, "deliver:poison", "{not json")
    assert store.pending.backlog() == {"crm": 2, "trace": 1}
    assert store.pending.backlog() == {"crm": 2, "trace": 1}  # once: not counted again
    member = next(m for m in redis_client.hkeys(keys.PENDING_TASKS) if m.endswith(":trace"))
    store.pending.settle_now(member)
    store.pending.settle_now(member)
    assert store.pending.backlog() == {"crm": 2}


def test_counting_again_mends_what_an_older_version_settled_or_added(store, redis_client):
    # workers of a version that did not count, beside this one, until the marker is
    # deleted: one delivery counted but settled by them, one pending they did not count
    jobs = route(store, event(1))
    assert store.pending.backlog() == {"crm": 1, "trace": 1}
    redis_client.hdel(keys.PENDING_TASKS, "deliver:" + jobs[0]["delivery_id"])
    redis_client.zrem(keys.PENDING, "deliver:" + jobs[0]["delivery_id"])
    late = new_job(event(2), "all", "helpdesk", "v1", RETRY)
    spec = dumps({"task": "relay.deliver", "args": [late]})
    redis_client.hset(keys.PENDING_TASKS, "deliver:" + late["delivery_id"], spec)
    assert store.pending.backlog() == {"crm": 1, "trace": 1}  # counted as they were
    redis_client.delete(keys.BACKLOG_COUNTED)
    assert store.pending.backlog() == {"trace": 1, "helpdesk": 1} == recount(redis_client)
