"""Event search (relay.ops.search) over the indexes the routing call writes, against the
suite's real Redis: every filter, intersections, cursor paging while events keep arriving,
the search state as deliveries settle, trimming with the history TTL."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from relay.errors import QueryError
from relay.events import Step, dead_letter, history_entry, new_job, routing_dead_letter
from relay.ops import dead_letters, search
from relay.ops.search import EventQuery, count_events, event_counts, search_events
from relay.parsing import build_events
from relay.state import Store, connect, keys
from relay.state import index as state_index
from tests.conftest import load_fixture
from tests.ops.test_dead_letters_and_history import Recorder

RETRY = {"attempts": 3, "initial": 0.1, "max": 0.2}
NOW = time.time()


@pytest.fixture
def store(redis_server):
    client = connect(redis_server.url)
    yield Store(client, 2 * 86400, 3600)  # history kept two days
    client.close()


def iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def receipt(status="Failed", code="7102", number="447700900123", source="default", at=None):
    payload = load_fixture("receipt-failed-invalid-address.json")
    info = payload["deliveryInfoNotification"]["deliveryInfo"]
    info.update(deliveryStatus=status, code=code, destination=number)
    payload["deliveryInfoNotification"]["transid"] = f"t-{time.monotonic_ns()}"
    (event,), _ = build_events(payload, source, set())
    if at is not None:
        event["received_at"] = iso(at)
    return event


def inbound(text="STOP please", sender="447700900555", source="default", at=None):
    payload = {**load_fixture("inbound-sms.json"), "message": text, "oa": sender}
    (event,), _ = build_events(payload, source, set())
    if at is not None:
        event["received_at"] = iso(at)
    return event


def route(store: Store, event, routes=(), destinations=()):
    """What the worker's routing does: one routing call with its history and jobs."""
    jobs = [new_job(event, routes[0], name, "v1", RETRY) for name in destinations]
    routed = (
        history_entry(Step.ROUTED, routes=list(routes), destinations=list(destinations))
        if jobs
        else history_entry(Step.UNROUTED, rules_version="v1")
    )
    entries = [history_entry(Step.RECEIVED, rules_version="v1"), routed]
    assert store.route(event, entries, jobs, [5.0] * len(jobs)) is not None
    return jobs


def ids(store: Store, query: EventQuery, limit: int = 500) -> list[str]:
    """Every id the query finds, page after page."""
    found, cursor = [], None
    while True:
        page = search_events(store, query, cursor, limit)
        found += [item.id for item in page.items]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def newest_first(*events) -> list[str]:
    return [e["id"] for e in sorted(events, key=lambda e: (e["received_at"], e["id"]))][::-1]


@pytest.fixture
def traffic(store):
    """A mix of receipts and inbound messages, a second apart, in three states."""
    failed = receipt(at=NOW - 50)
    undelivered = receipt(status="Un-Delivered", code="7500", source="eu", at=NOW - 40)
    delivered = receipt(status="Delivered", code="0", at=NOW - 30)
    stop = inbound("stop now", at=NOW - 20)
    hello = inbound("Héllo there", source="eu", at=NOW - 10)
    jobs = {
        "failed": route(store, failed, ["failures"], ["crm", "trace"]),
        "undelivered": route(store, undelivered, ["failures"], ["crm"]),
        "delivered": route(store, delivered, ["all"], ["trace"]),
        "stop": route(store, stop, ["inbound", "audit"], ["helpdesk"]),
        "hello": route(store, hello),
    }
    state = store.deliveries
    for job in jobs["failed"]:  # both done: delivered
        state.delivered(job, {"attempt": 1}, [])
    (crm,) = jobs["undelivered"]  # dead
    state.dead(crm, dead_letter(crm, "HTTP 400", []), [])
    # "delivered" stays pending (its attempt never finished); "stop" has a retry scheduled
    (helpdesk,) = jobs["stop"]
    state.failed(helpdesk, {"attempt": 1}, [], retry_at=time.time() + 60)
    return {
        "failed": failed,
        "undelivered": undelivered,
        "delivered": delivered,
        "stop": stop,
        "hello": hello,
        "jobs": jobs,
    }


def test_no_filter_lists_every_routed_event_newest_first(store, traffic):
    events = [traffic[name] for name in ("failed", "undelivered", "delivered", "stop", "hello")]
    assert ids(store, EventQuery()) == newest_first(*events)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (EventQuery(kind="delivery_receipt"), ["delivered", "undelivered", "failed"]),
        (EventQuery(kind="INBOUND_MESSAGE"), ["hello", "stop"]),  # as rules compare kinds
        (EventQuery(status="failed"), ["failed"]),
        (EventQuery(status="undelivered"), ["undelivered"]),  # Un-Delivered, as rules read it
        (EventQuery(code="7500"), ["undelivered"]),
        (EventQuery(code="0"), ["delivered"]),
        (EventQuery(source="eu"), ["hello", "undelivered"]),
        (EventQuery(source="EU"), []),  # a source is a name: exact
        (EventQuery(route="failures"), ["undelivered", "failed"]),
        (EventQuery(route="audit"), ["stop"]),  # the second route of a continue: true chain
        (EventQuery(destination="crm"), ["undelivered", "failed"]),
        (EventQuery(destination="trace"), ["delivered", "failed"]),
        (EventQuery(keyword="stop"), ["stop"]),  # first word, upper-cased, as rules see it
        (EventQuery(keyword="HELLO"), ["hello"]),  # accents stripped, as the keyword is
        (EventQuery(state="delivered"), ["failed"]),
        (EventQuery(state="dead"), ["undelivered"]),
        (EventQuery(state="pending"), ["stop", "delivered"]),
        (EventQuery(state="unrouted"), ["hello"]),
        (EventQuery(since=NOW - 35), ["hello", "stop", "delivered"]),
        (EventQuery(until=NOW - 30), ["undelivered", "failed"]),  # until is exclusive
        (EventQuery(since=NOW - 45, until=NOW - 15), ["stop", "delivered", "undelivered"]),
        (EventQuery(kind="delivery_receipt", destination="crm", state="dead"), ["undelivered"]),
        (EventQuery(route="failures", source="default"), ["failed"]),
        (EventQuery(destination="crm", keyword="stop"), []),
        (EventQuery(destination="nowhere"), []),
    ],
)
def test_each_filter_and_their_intersections(store, traffic, query, expected):
    assert ids(store, query) == [traffic[name]["id"] for name in expected]


def test_a_summary_says_what_the_event_was_and_what_became_of_it(store, traffic):
    (item,) = search_events(store, EventQuery(state="dead")).items
    assert item.id == traffic["undelivered"]["id"]
    assert item.accepted_at == traffic["undelivered"]["received_at"]
    assert (item.kind, item.status, item.code, item.source) == (
        "delivery_receipt",
        "Un-Delivered",
        "7500",
        "eu",
    )
    assert item.summary == "Un-Delivered 7500"
    assert (item.routes, item.destinations, item.state) == (("failures",), ("crm",), "dead")
    assert item.number == "********0123"  # masked as in logs
    (stop,) = search_events(store, EventQuery(keyword="STOP")).items
    assert (stop.sender, stop.keyword, stop.routes) == (
        "********0555",
        "STOP",
        ("inbound", "audit"),
    )
    whole = search_events(store, EventQuery(keyword="STOP"), pii=True).items[0]
    assert whole.sender == "447700900555"  # RELAY_LOG_PII=1
    assert item.to_dict()["destinations"] == ["crm"]


def test_a_message_whose_first_word_is_a_phone_number_has_it_masked_in_its_summary(store):
    event = inbound("+447700900999: call me back")
    route(store, event, ["inbound"], ["trace"])
    (item,) = search_events(store, EventQuery(keyword="447700900999")).items
    assert (item.keyword, item.summary) == ("********0999", "********0999")
    (whole,) = search_events(store, EventQuery(keyword="447700900999"), pii=True).items
    assert (whole.keyword, whole.summary) == ("447700900999", "447700900999")  # RELAY_LOG_PII=1


def test_paging_has_no_gap_nor_repeat_while_events_keep_arriving(store):
    # 90 events, a third of them accepted in the very same millisecond (ties in the index)
    old = [route(store, receipt(at=NOW - 100 + i * 0.5), ["all"], ["trace"]) for i in range(60)]
    same = NOW - 60.0
    tied = [inbound(f"word{i}", at=same) for i in range(30)]
    for event in tied:
        route(store, event, ["all"], ["trace"])
    before = newest_first(*[jobs[0]["event"] for jobs in old], *tied)
    seen, cursor, pages = [], None, 0
    while True:
        page = search_events(store, EventQuery(destination="trace"), cursor, limit=7)
        seen += [item.id for item in page.items]
        pages += 1
        # new traffic between page requests: newer than any cursor
        route(store, receipt(at=time.time()), ["all"], ["trace"])
        route(store, inbound("later", at=time.time()), ["all"], ["trace"])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == before  # every event that was there, once each, newest first
    assert pages == 13  # 90 / 7 rounded up: no empty last page


def test_a_sparse_intersection_walks_in_bounded_steps(store, monkeypatch):
    monkeypatch.setattr(state_index, "SCAN_BUDGET", 4)  # each Lua call walks 4 entries at most
    wanted = []
    for i in range(40):
        event = receipt(at=NOW - 100 + i)
        route(store, event, ["all"], ["crm" if i % 9 == 0 else "trace"])
        inbound_event = inbound(at=NOW - 100 + i + 0.5)
        route(store, inbound_event, ["all"], ["crm"])
        if i % 9 == 0:
            wanted.append(event)
    query = EventQuery(kind="delivery_receipt", destination="crm")
    assert ids(store, query, limit=2) == newest_first(*wanted)
    assert len(wanted) == 5


def test_state_follows_the_deliveries_and_a_replay_reopens_it(store):
    event = receipt(at=NOW - 5)
    crm, trace = route(store, event, ["failures"], ["crm", "trace"])
    event_id = event["id"]
    assert store.index.state(event_id) == "pending"
    store.deliveries.failed(crm, {"attempt": 1}, [], retry_at=time.time() + 30)
    assert ids(store, EventQuery(state="pending")) == [event_id]
    assert count_events(store, "retrying") == 1
    store.deliveries.delivered(trace, {"attempt": 1}, [])
    assert store.index.state(event_id) == "pending"  # crm is still open
    store.deliveries.dead(crm, dead_letter(crm, "gave up", []), [])
    assert ids(store, EventQuery(state="dead")) == [event_id]
    assert ids(store, EventQuery(state="pending")) == []
    assert count_events(store, "retrying") == 0
    publisher = Recorder()
    dead_letters.replay(store, publisher, [crm["delivery_id"]])
    assert ids(store, EventQuery(state="pending")) == [event_id]
    assert ids(store, EventQuery(state="dead")) == []
    store.deliveries.delivered(crm, {"attempt": 2}, [])
    assert ids(store, EventQuery(state="delivered")) == [event_id]
    assert [ids(store, EventQuery(state=s)) for s in ("pending", "dead", "unrouted")] == [[]] * 3


def test_a_failed_routing_trims_what_history_no_longer_keeps_from_the_sets_it_writes(
    redis_server,
):
    client = connect(redis_server.url)
    store = Store(client, 60, 3600)  # history kept a minute
    event = inbound("boom", at=time.time())
    stale = (time.time() - 120) * 1000  # older than history
    written = (keys.INDEX_ALL, keys.index("keyword", "boom"), keys.index("state", "dead"))
    for key in written:
        client.zadd(key, {"01GONE": stale})
    store.routing_failed(
        event,
        [history_entry(Step.RECEIVED, rules_version="v1")],
        routing_dead_letter(event, "v1", "routing failed: boom"),
    )
    for key in written:
        assert client.zscore(key, event["id"]) is not None
        assert client.zscore(key, "01GONE") is None
        assert 0 < client.ttl(key) <= 60
    client.close()


def test_a_value_no_key_can_hold_finds_nothing(store):
    route(store, receipt(at=NOW - 1), ["failures"], ["crm"])
    # a command's argument that is not UTF-8 (click passes its bytes as lone surrogates)
    for query in (EventQuery(route="\udcff"), EventQuery(kind="delivery_receipt", code="7\ud800")):
        assert search_events(store, query).to_dict() == {"events": [], "next_cursor": None}


def test_skipped_deliveries_count_as_settled(store):
    event = inbound("STOP", at=NOW - 1)
    (reply,) = route(store, event, ["stop"], ["auto-reply"])
    store.deliveries.skipped(reply, [])
    assert store.index.state(event["id"]) == "delivered"


def test_a_failed_routing_is_dead_until_its_replay_routes_it(store):
    event = inbound("boom", at=NOW - 1)
    store.routing_failed(
        event,
        [history_entry(Step.RECEIVED, rules_version="v1")],
        {
            "id": f"{event['id']}:(routing)",
            "event": event,
            "route": None,
            "destination": None,
            "rules_version": "v1",
            "retry": None,
            "reason": "routing failed: boom",
            "dead_at": iso(NOW),
            "attempts": [],
        },
    )
    assert ids(store, EventQuery(state="dead", keyword="boom")) == [event["id"]]
    dead_letters.replay(store, Recorder(), [f"{event['id']}:(routing)"])
    assert store.index.state(event["id"]) == "pending"
    route(store, event, ["all"], ["trace"])  # the replayed routing task, as the worker runs it
    assert ids(store, EventQuery(state="pending")) == [event["id"]]
    assert ids(store, EventQuery(state="dead")) == []


def test_counts_per_window(store, traffic):
    route(store, receipt(at=NOW - 7200), ["all"], ["trace"])  # two hours ago: 24 h only
    counts = event_counts(store, now=NOW)
    assert counts["1h"] == {
        "accepted": 5,
        "retrying": 1,
        "pending": 2,
        "delivered": 1,
        "dead": 1,
        "unrouted": 1,
    }
    assert counts["24h"]["accepted"] == 6 and counts["24h"]["pending"] == 3
    assert count_events(store, "dead", since=NOW - 45, until=NOW - 35) == 1
    with pytest.raises(QueryError) as refused:
        count_events(store, "lost")
    assert refused.value.field == "state"


def test_indexes_drop_what_history_no_longer_keeps(redis_server):
    client = connect(redis_server.url)
    store = Store(client, 60, 3600)  # history kept a minute
    old = receipt(at=time.time() - 120)
    route(store, old, ["all"], ["trace"])  # routed late: older than the history TTL already
    fresh = receipt(at=time.time())
    route(store, fresh, ["all"], ["trace"])
    for key in (keys.INDEX_ALL, keys.index("destination", "trace"), keys.index("code", "7102")):
        assert client.zscore(key, old["id"]) is None  # trimmed by the next write
        assert client.zscore(key, fresh["id"]) is not None
        assert 0 < client.ttl(key) <= 60  # and each set expires with the history
    assert 0 < client.ttl(keys.track(fresh["id"])) <= 60
    assert ids(store, EventQuery()) == [fresh["id"]]
    client.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"query": EventQuery(state="lost")}, "state"),
        ({"query": EventQuery(kind="")}, "kind"),
        ({"query": EventQuery(since=NOW, until=NOW - 1)}, "until"),
        ({"query": EventQuery(), "cursor": "not-a-cursor"}, "cursor"),
        ({"query": EventQuery(), "cursor": "MTIz"}, "cursor"),  # base64 of "123": no id
        ({"query": EventQuery(), "limit": 0}, "limit"),
        ({"query": EventQuery(), "limit": 501}, "limit"),
    ],
)
def test_a_bad_query_names_its_field(store, kwargs, field):
    with pytest.raises(QueryError) as refused:
        search_events(store, **kwargs)
    assert refused.value.field == field


def test_parse_query_reads_the_api_and_command_forms():
    query = search.parse_query(
        {"kind": "inbound_message", "status": "", "since": "2h", "until": "2030-01-01T00:00Z"},
        now=NOW,
    )
    assert query.kind == "inbound_message" and query.status is None  # empty: no filter
    assert query.since == pytest.approx(NOW - 7200)
    assert query.until == datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
    assert search.parse_query({"since": "1700000000"}).since == 1700000000
    with pytest.raises(QueryError) as refused:
        search.parse_query({"until": "yesterday"})
    assert refused.value.field == "until"
    with pytest.raises(QueryError) as refused:
        search.parse_limit("ten")
    assert refused.value.field == "limit"


def test_route_batch_routes_many_events_in_one_round_trip(store):
    events = [receipt(at=NOW - 3 + i) for i in range(3)]
    batch = []
    for event in events:
        job = new_job(event, "all", "trace", "v1", RETRY)
        entries = [
            history_entry(Step.RECEIVED, rules_version="v1"),
            history_entry(Step.ROUTED, routes=["all"], destinations=["trace"]),
        ]
        batch.append((event, entries, [job], [5.0]))
    assert store.route_batch(batch) == [[1], [1], [1]]
    assert store.route_batch(batch[:1]) == [None]  # routed already
    assert ids(store, EventQuery(route="all", state="pending")) == newest_first(*events)
    assert [e["step"] for e in store.history(events[0]["id"])] == ["received", "routed"]


def test_a_replay_that_cannot_publish_leaves_the_event_dead(store):
    event = receipt(at=NOW - 2)
    (crm,) = route(store, event, ["failures"], ["crm"])
    store.deliveries.dead(crm, dead_letter(crm, "HTTP 400", []), [])

    def broker_down(name, args):
        raise OSError("connection refused")

    with pytest.raises(OSError):
        dead_letters.replay(store, Recorder(broker_down), [crm["delivery_id"]])
    assert ids(store, EventQuery(state="dead")) == [event["id"]]
    assert ids(store, EventQuery(state="pending")) == []
