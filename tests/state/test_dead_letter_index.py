"""The dead letters' indexes (by time, and by destination) never disagree with the dead
letters: whatever stores, removes, expires or drops one changes them in the same call."""

from __future__ import annotations

import math
import time

import pytest

from relay.events import dead_letter, new_job, routing_dead_letter
from relay.state import Store, connect, keys
from relay.state.client import dumps

RETRY = {"attempts": 1, "initial": 1.0, "max": 1.0}
EVERYTHING = (-math.inf, math.inf)


def record(event_id: str, destination: str = "crm") -> dict:
    job = new_job({"id": event_id}, "r", destination, "v1", RETRY)
    return dead_letter(job, "HTTP 400", [])


@pytest.fixture
def store_for(redis_server):
    """Stores on the suite's Redis with a dead-letter retention and cap; closed after."""
    clients = []

    def make(ttl: float = 3600, limit: int = 100) -> Store:
        clients.append(connect(redis_server.url))
        return Store(clients[-1], 3600, 3600, dead_letter_ttl=ttl, dead_letter_max=limit)

    yield make
    for client in clients:
        client.close()


def indexed(store: Store, destination: str | None) -> list[str]:
    """The ids a page of the index holds (all of them, oldest first)."""
    entries, total = store.dead_letters.page(destination, *EVERYTHING, None, 10_000)
    assert total == len(entries)
    return [did for _, did in entries]


def stored(store: Store, destination: str) -> list[str]:
    """The ids of the dead letters of ``destination`` there are, read record by record."""
    found = []
    for key in store.client.scan_iter(keys.dead("*")):
        value = store.client.get(key)
        if value and f'"destination":"{destination}"' in value:
            found.append(key.removeprefix(keys.dead("")))
    return sorted(found)


def agrees(store: Store) -> bool:
    prefix = keys.dead("")
    every = sorted(key.removeprefix(prefix) for key in store.client.scan_iter(prefix + "*"))
    indexed_with_destination = sorted(store.client.hkeys(keys.DEAD_DESTINATIONS))
    return (
        sorted(indexed(store, None)) == every
        and sorted(indexed(store, "crm")) == stored(store, "crm")
        and sorted(indexed(store, "trace")) == stored(store, "trace")
        and indexed_with_destination == sorted(stored(store, "crm") + stored(store, "trace"))
    )


def restamp(store: Store, delivery_id: str, destination: str, when: float) -> None:
    """Make a dead letter look stored at ``when``, in both of its indexes."""
    store.client.zadd(keys.DEAD, {delivery_id: when})
    store.client.zadd(keys.dead_of(destination), {delivery_id: when})


def age(store: Store, delivery_id: str, destination: str, seconds: float) -> None:
    """Make a dead letter look stored ``seconds`` ago."""
    restamp(store, delivery_id, destination, time.time() - seconds)


def test_every_way_a_dead_letter_goes_takes_it_out_of_its_destination_index(store_for):
    store = store_for(limit=6)
    for number in range(6):
        store.dead_letters.add(record(f"E{number}", "crm" if number % 2 else "trace"))
    assert indexed(store, "crm") == ["E1:crm", "E3:crm", "E5:crm"] and agrees(store)

    assert store.dead_letters.remove("E1:crm")
    assert indexed(store, "crm") == ["E3:crm", "E5:crm"] and agrees(store)

    assert store.dead_letters.remove_if_unchanged(store.dead_letters.get("E3:crm"))
    assert indexed(store, "crm") == ["E5:crm"] and agrees(store)

    age(store, "E0:trace", "trace", 600)
    assert store.dead_letters.purge(before=time.time() - 300) == 1
    assert indexed(store, "trace") == ["E2:trace", "E4:trace"] and agrees(store)

    for number in range(6, 10):  # 3 kept + 4 new, at most 6: the oldest goes
        store.dead_letters.add(record(f"E{number}", "crm"))
    assert indexed(store, "trace") == ["E4:trace"] and agrees(store)

    assert store.dead_letters.purge() == 6
    assert agrees(store) and not store.client.exists(keys.DEAD_DESTINATIONS)


def test_a_dead_letter_past_its_retention_is_skipped_then_leaves_no_entry_behind(store_for):
    store = store_for(ttl=3600)
    store.dead_letters.add(record("OLD"))
    store.dead_letters.add(record("NEW"))
    age(store, "OLD:crm", "crm", 2 * 3600)
    store.client.delete(keys.dead("OLD:crm"))  # what its TTL did meanwhile
    window = (store.dead_letters.window(time.time()), math.inf)
    assert store.dead_letters.page("crm", *window, None, 10) == (
        [(store.dead_letters.stored_at("NEW:crm"), "NEW:crm")],
        1,
    )
    assert store.dead_letters.newest(["crm"], window[0])[0][0] == 1

    store.dead_letters.add(record("LATER", "trace"))  # the next store trims it everywhere
    assert indexed(store, "crm") == ["NEW:crm"]
    assert store.client.hget(keys.DEAD_DESTINATIONS, "OLD:crm") is None
    assert agrees(store)


def test_the_destination_indexes_expire_with_their_newest_dead_letter(store_for):
    store = store_for(ttl=86400)
    store.dead_letters.add(record("E1"))
    assert 86000 < store.client.ttl(keys.dead_of("crm")) <= 86400
    assert 86000 < store.client.ttl(keys.DEAD_DESTINATIONS) <= 86400


def test_a_record_gone_behind_the_index_is_forgotten(store_for):
    store = store_for()
    store.dead_letters.add(record("E1"))
    store.dead_letters.add(record("E2"))
    store.client.delete(keys.dead("E1:crm"))
    assert store.dead_letters.forget(["E1:crm", "E2:crm"]) == 1  # E2 is still there
    assert indexed(store, "crm") == ["E2:crm"] and agrees(store)


def test_a_routing_dead_letter_is_in_the_time_index_only(store_for):
    store = store_for()
    store.dead_letters.add(routing_dead_letter({"id": "E1"}, "v1", "KeyError"))
    assert indexed(store, None) == ["E1:(routing)"]
    assert store.client.hlen(keys.DEAD_DESTINATIONS) == 0
    assert store.dead_letters.remove("E1:(routing)") and indexed(store, None) == []


def test_dead_letters_stored_before_the_destination_index_are_found_by_destination(
    store_for,
):
    store = store_for()
    now = time.time()
    helpdesk = [  # the fallback of E0's and E2's deliveries to crm: its ids name crm
        {**record("E0", "helpdesk"), "id": "E0:crm:fallback"},
        {**record("E2", "helpdesk"), "id": "E2:crm:fallback", "event": {"text": "\ud83d"}},
    ]  # E2's SMS carried a lone surrogate: cjson cannot decode it
    olds = [record("E0"), record("E1", "trace"), record("E2"), *helpdesk]
    olds.append(routing_dead_letter({"id": "E3"}, "v1", "KeyError"))
    for number, old in enumerate(olds):  # as relay stored them before: no such index
        store.client.set(keys.dead(old["id"]), dumps(old), ex=3600)
        store.client.zadd(keys.DEAD, {old["id"]: now - 100 + number})
    store.client.set(keys.dead("GONE:crm"), dumps(record("GONE")), ex=3600)  # not indexed

    assert indexed(store, "crm") == ["E0:crm", "E2:crm"]
    assert indexed(store, "trace") == ["E1:trace"]
    assert indexed(store, "helpdesk") == ["E0:crm:fallback", "E2:crm:fallback"]
    assert store.client.hlen(keys.DEAD_DESTINATIONS) == 5  # the routing's is in no set
    assert store.client.get(keys.DEAD_INDEXED) == "1"
    assert store.dead_letters.page("crm", *EVERYTHING, None, 1)[0] == [(now - 100, "E0:crm")]

    fresh = store_for()  # another process: the marker says it was done
    fresh.dead_letters.add(record("E4"))
    store.client.delete(keys.DEAD_INDEXED)
    assert indexed(fresh, "crm") == ["E0:crm", "E2:crm", "E4:crm"]  # again: nothing twice
    assert fresh.dead_letters.remove("E0:crm") and indexed(fresh, "crm") == ["E2:crm", "E4:crm"]
    assert fresh.dead_letters.remove("E2:crm:fallback")
    assert indexed(fresh, "helpdesk") == ["E0:crm:fallback"]


def test_dead_letters_stored_at_the_same_time_page_by_id_without_a_gap(store_for):
    store = store_for()
    for number in range(10):
        store.dead_letters.add(record(f"E{number}"))
    same = time.time()
    for number in reversed(range(10)):  # stored in the other order, all at the same time
        restamp(store, f"E{number}:crm", "crm", same)
    for destination in ("crm", None):
        seen, after = [], None
        while True:
            entries, total = store.dead_letters.page(destination, *EVERYTHING, after, 3)
            assert total == 10
            if not entries:
                break
            seen += [did for _, did in entries]
            after = entries[-1]
        assert seen == [f"E{number}:crm" for number in range(10)]
