"""relay.ops.dead_letter_pages against the suite's real Redis: what a page does with an
index entry whose record is gone, filters by age, and the ids of a bulk action."""

from __future__ import annotations

import time

import pytest

from relay.events import dead_letter, new_job
from relay.ops.dead_letter_pages import (
    CursorError,
    DeadLetterFilter,
    matching_ids,
    page_dead_letters,
)
from relay.state import Store, connect, keys

RETRY = {"attempts": 1, "initial": 1.0, "max": 1.0}


@pytest.fixture
def store(redis_server):
    client = connect(redis_server.url)
    yield Store(client, 3600, 3600, dead_letter_ttl=86400)
    client.close()


def add(store: Store, *event_ids: str, destination: str = "crm") -> None:
    for event_id in event_ids:
        job = new_job({"id": event_id}, "r", destination, "v1", RETRY)
        store.dead_letters.add(dead_letter(job, "HTTP 400", []))


def test_a_dead_letter_whose_record_is_gone_is_skipped_and_taken_out_of_the_index(store):
    add(store, "E1", "E2", "E3")
    store.client.delete(keys.dead("E2:crm"))  # expired by a retention shorter than now
    page = page_dead_letters(store, DeadLetterFilter(destination="crm"), limit=2)
    assert [item["id"] for item in page.items] == ["E1:crm"]
    assert page.total == 2 and page.next_cursor is not None
    rest = page_dead_letters(store, DeadLetterFilter(destination="crm"), page.next_cursor)
    assert [item["id"] for item in rest.items] == ["E3:crm"] and rest.next_cursor is None
    assert store.dead_letters.ids() == ["E1:crm", "E3:crm"]
    assert store.client.zrange(keys.dead_of("crm"), 0, -1) == ["E1:crm", "E3:crm"]


def test_older_and_newer_than_select_by_when_a_dead_letter_was_stored(store):
    add(store, "OLD", "MID", "NEW")
    now = time.time()
    for did, hours in (("OLD:crm", 5), ("MID:crm", 2)):
        store.client.zadd(keys.DEAD, {did: now - hours * 3600})
        store.client.zadd(keys.dead_of("crm"), {did: now - hours * 3600})

    def ids(**which: float) -> list[str]:
        page = page_dead_letters(store, DeadLetterFilter("crm", **which), now=now)
        assert page.total == len(page.items)
        return [item["id"] for item in page.items]

    assert ids(older_than=3600) == ["OLD:crm", "MID:crm"]
    assert ids(newer_than=3 * 3600) == ["MID:crm", "NEW:crm"]
    assert ids(older_than=3600, newer_than=3 * 3600) == ["MID:crm"]
    assert ids(older_than=3 * 3600, newer_than=3600) == []


def test_a_bulk_action_takes_the_oldest_ids_and_counts_them_all(store):
    add(store, *(f"E{number}" for number in range(7)))
    add(store, "T1", destination="trace")
    assert matching_ids(store, DeadLetterFilter("crm"), 5) == (
        [f"E{number}:crm" for number in range(5)],
        7,
    )
    assert len(matching_ids(store)[0]) == 8


def test_a_cursor_from_elsewhere_is_a_cursor_error(store):
    with pytest.raises(CursorError, match="not a cursor this server gave"):
        page_dead_letters(store, cursor="not-one")
