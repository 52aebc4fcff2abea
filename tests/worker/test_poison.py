"""Work that never settles however often it is published again is poison: after
RELAY_POISON_AFTER republications it goes to the dead letters, visible in the history, and
is never published again."""

from __future__ import annotations

from relay.events import new_job
from relay.state import Store, connect, keys
from relay.worker import sweeper


class Celery:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list]] = []

    def send_task(self, name, args, task_id=None):
        self.sent.append((name, args))


def test_a_routing_published_again_too_often_is_dead_lettered(redis_server):
    store = Store(connect(redis_server.url), 3600, 3600, grace=60)
    event = {"id": "E1", "kind": "inbound_message", "source": "default", "text": "x"}
    store.accept(["fp"], [event])
    spec = store.pending.get("route:E1")
    celery = Celery()
    assert [sweeper.republish(celery, store, "route:E1", spec, 2) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert len(celery.sent) == 2
    letter = store.dead_letters.get("E1:(routing)")
    assert letter["reason"] == "poison: published again 2 times and never settled"
    assert [entry["step"] for entry in store.history("E1")] == ["received", "dead_lettered"]
    assert store.pending.get("route:E1") is None  # settled: never published again


def test_a_delivery_whose_task_does_not_decode_is_dead_lettered_at_once(redis_server):
    store = Store(connect(redis_server.url), 3600, 3600, grace=60)
    job = new_job({"id": "E2"}, "r", "hook", "v1", {"attempts": 3, "initial": 1, "max": 1})
    store.pending.register_now("deliver:E2:hook", "relay.deliver", [job])
    store.client.hset(keys.PENDING_TASKS, "deliver:E2:hook", "{broken")
    store.client.zadd(keys.PENDING, {"deliver:E2:hook": 0})  # overdue
    ((member, spec),) = store.pending.overdue()
    assert spec is None  # does not decode
    assert sweeper.republish(Celery(), store, member, spec, 3) is False
    assert store.dead_letters.get("E2:hook")["reason"] == "poison: its task does not decode"
    assert store.pending.get("deliver:E2:hook") is None


def test_a_rerouted_delivery_whose_task_does_not_decode_keeps_its_id(redis_server):
    store = Store(connect(redis_server.url), 3600, 3600, grace=60)
    member = "deliver:E3:hook~2"  # the first re-route's delivery to hook
    store.pending.register_now(member, "relay.deliver", [])
    store.client.hset(keys.PENDING_TASKS, member, "{broken")
    store.client.zadd(keys.PENDING, {member: 0})
    ((found, spec),) = store.pending.overdue()
    assert sweeper.republish(Celery(), store, found, spec, 3) is False
    letter = store.dead_letters.get("E3:hook~2")
    assert (letter["id"], letter["destination"]) == ("E3:hook~2", "hook")
    assert store.history("E3")[-1]["delivery_id"] == "E3:hook~2"
