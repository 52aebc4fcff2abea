"""The search index's own interface (relay.state.index.EventIndex), against the suite's
real Redis: facet/value pairs in (as a user writes them), event ids out; no key names."""

from __future__ import annotations

import time

import pytest

from relay.state.index import RETRY
from tests.ops.test_search import inbound, receipt, route

NOW = time.time()


@pytest.fixture
def events(store):
    """Four events a second apart, newest last, routed as the worker routes them."""
    failed = receipt(status="Failed", source="eu", at=NOW - 40)
    undelivered = receipt(status="Un-Delivered", code="7500", source="eu", at=NOW - 30)
    delivered = receipt(status="Delivered", code="0", at=NOW - 20)
    stop = inbound("stop now", at=NOW - 10)
    route(store, failed, ["failures"], ["crm"])
    route(store, undelivered, ["failures"], ["crm", "trace"])
    route(store, delivered, ["all"], ["trace"])
    (helpdesk,) = route(store, stop, ["inbound"], ["helpdesk"])
    store.index.settle_now(stop["id"], {helpdesk["delivery_id"]: RETRY}, NOW)
    return [e["id"] for e in (failed, undelivered, delivered, stop)]


def test_a_page_takes_facet_values_as_written_and_gives_event_ids_newest_first(store, events):
    failed, undelivered, delivered, stop = events
    index = store.index
    assert index.page({}).ids == [stop, delivered, undelivered, failed]
    assert index.page({"source": "eu"}).ids == [undelivered, failed]
    # normalised the way the index keeps them: case, and a status's '-', '_' and spaces
    assert index.page({"status": "UN_DELIVERED", "source": "eu"}).ids == [undelivered]
    assert index.page({"keyword": "Stop", "kind": "INBOUND_MESSAGE"}).ids == [stop]
    assert index.page({"destination": "trace", "route": "failures"}).ids == [undelivered]
    assert index.page({"destination": "nowhere"}).ids == []
    assert index.page({"route": "\ud800"}).ids == []  # no key holds it: indexed never
    (entry,) = index.page({"code": "0"}).events
    assert entry[0] == delivered and abs(entry[1] - (NOW - 20)) < 0.002  # accept time, s


def test_a_page_is_bounded_by_time_and_continues_from_its_cursor(store, events):
    failed, undelivered, delivered, stop = events
    index = store.index
    first = index.page({}, limit=3)
    assert first.ids == [stop, delivered, undelivered] and first.next_cursor
    rest = index.page({}, cursor=first.next_cursor, limit=3)
    assert rest.ids == [failed] and rest.next_cursor is None
    assert index.page({}, since=NOW - 30, until=NOW - 10).ids == [delivered, undelivered]
    older = index.page({}, since=NOW - 35, limit=1)
    assert older.ids == [stop]
    assert index.page({}, since=NOW - 35, cursor=older.next_cursor).ids == [
        delivered,
        undelivered,
    ]


def test_counts_take_one_facet_value_and_a_window(store, events):
    index = store.index
    assert index.count({}) == 4
    assert index.count({"kind": "Delivery_Receipt"}) == 3  # normalised as pages are
    assert index.count({"source": "eu"}, since=NOW - 35) == 1
    assert index.count({"state": "pending"}, until=NOW - 15) == 3
    assert index.count_retrying() == 1
    assert index.count_retrying(until=NOW - 15) == 0


def test_an_unknown_facet_two_counted_facets_or_a_foreign_cursor_are_refused(store, events):
    index = store.index
    with pytest.raises(ValueError, match="no index of 'colour'"):
        index.page({"colour": "red"})
    with pytest.raises(ValueError, match="one facet at most"):
        index.count({"source": "eu", "kind": "delivery_receipt"})
    with pytest.raises(ValueError, match="not a cursor"):
        index.page({}, cursor="relay:idx:all")
