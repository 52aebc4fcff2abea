"""Dead letters do not grow forever: they expire, and the oldest go beyond a cap."""

from __future__ import annotations

import time

from relay import metrics
from relay.events import dead_letter, new_job
from relay.state import Store, connect, keys


def record(event_id: str) -> dict:
    job = new_job({"id": event_id}, "r", "hook", "v1", {"attempts": 1, "initial": 1, "max": 1})
    return dead_letter(job, "HTTP 400", [])


def store_for(redis_server, ttl: float = 3600, limit: int = 100) -> Store:
    return Store(connect(redis_server.url), 3600, 3600, dead_letter_ttl=ttl, dead_letter_max=limit)


def test_a_dead_letter_expires_after_its_retention(redis_server):
    store = store_for(redis_server, ttl=86400)
    store.dead_letters.add(record("E1"))
    assert 86000 < store.client.ttl(keys.dead("E1:hook")) <= 86400
    # one stored before the retention began is forgotten by the next write
    store.client.zadd(keys.DEAD, {"OLD:hook": time.time() - 2 * 86400})
    store.dead_letters.add(record("E2"))
    assert store.dead_letters.ids() == ["E1:hook", "E2:hook"]


def test_beyond_the_cap_the_oldest_go_first_and_are_counted(redis_server):
    store = store_for(redis_server, limit=3)
    dropped = metrics.m().dead_letters_dropped
    before = dropped._value.get()
    for number in range(5):
        store.dead_letters.add(record(f"E{number}"))
        time.sleep(0.002)  # distinct scores
    assert store.dead_letters.ids() == ["E2:hook", "E3:hook", "E4:hook"]
    assert store.client.get(keys.dead("E0:hook")) is None
    assert dropped._value.get() - before == 2


def test_redis_memory_past_80_percent_of_maxmemory_is_a_warning(redis_server):
    store = store_for(redis_server)
    used = int(store.client.info("memory")["used_memory"])
    previous = store.client.config_get("maxmemory")["maxmemory"]
    try:
        store.client.config_set("maxmemory", str(int(used / 0.5)))
        assert store.memory_warning() is None
        store.client.config_set("maxmemory", str(int(used / 0.9) + 1))
        assert "of its maxmemory" in (store.memory_warning() or "")
    finally:
        store.client.config_set("maxmemory", previous)
