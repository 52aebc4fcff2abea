"""Ordered delivery per key, in process: real Redis, a real HTTP receiver, the web's accept
call and the worker's routing and delivery code; a scheduler that records what would be
published (so a parked delivery is seen to get no task message: it is run, in the thread
whose attempt settled the one before it, when its turn comes).

Each test accepts events as the web does (``Store.accept`` with the rules' keys), then
routes them in an order of its choosing, as parallel intake threads may.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from relay.cli.embedded import EmbeddedRedis
from relay.events import new_id
from relay.ops import dead_letters, destinations, history
from relay.ops.reroute import reroute
from relay.parsing import build_events
from relay.state import keys
from relay.state.keys import deliver_member
from relay.state.ordering import key_of
from relay.web import ingest
from relay.worker.delivery import deliver_job
from relay.worker.ownership import Heartbeat, task_id
from relay.worker.routing import route_event
from tests.harness import FIXTURES, in_process_runtime
from tests.httpsink import Answer

RULES = """
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 2s
    retry: {{attempts: 3, initial: 1s, max: 1s}}
    ordered_by: transid
    on_failure: {on_failure}
routes:
  - {{name: delivered, match: {{status: delivered}}, to: [hook]}}
"""


class Recorder:
    """Stands in for a Celery app that publishes: records ``(task, args)``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list]] = []

    def send_task(self, name: str, args: list) -> None:
        self.sent.append((name, args))


def make_rig(redis_server, sink, on_failure: str = "skip"):
    rules = RULES.format(url=sink.url("/hook"), on_failure=on_failure)
    return in_process_runtime(redis_server.url, rules)


@pytest.fixture
def rig(redis_server, sink):
    return make_rig(redis_server, sink)


def accept(runtime, *receipts: tuple[str, str]) -> list[dict]:
    """Receipts ``(transid, fixture)`` accepted in this order, in one batch, as the web
    accepts them (each with its accept number for the rules' keys)."""
    events = []
    for transid, fixture in receipts:
        payload = json.loads((FIXTURES / fixture).read_text())
        (event,), _ = build_events(payload, "default", frozenset())
        events.append({**event, "id": new_id(), "transid": transid})
    ruleset = runtime.rules.current
    orders = [ruleset.order_values(event) for event in events]
    claims = runtime.store.accept([f"fp-{e['id']}" for e in events], events, orders)
    assert all(claims)
    return events


def delivered(runtime, *transids: str) -> list[dict]:
    return accept(runtime, *((transid, "receipt-delivered.json") for transid in transids))


def sent(sink) -> list[str]:
    """The event ids the receiver got, in order."""
    return [request.json()["id"] for request in sink.requests]


def did(event: dict) -> str:
    return f"{event['id']}:hook"


def test_a_later_event_routed_first_waits_for_the_earlier_one(rig, sink):
    runtime, store, scheduler = rig
    first, second = delivered(runtime, "T1", "T1")
    assert route_event(runtime, second) == ["queued"]
    assert sink.requests == [] and scheduler.calls == []  # parked: no task message
    assert route_event(runtime, first) == ["delivered"]  # …and the second, in its turn
    assert sent(sink) == [first["id"], second["id"]]
    assert scheduler.calls == [] and store.pending.count() == 0


def test_items_of_one_batch_keep_their_batch_order(rig, sink):
    runtime, store, scheduler = rig
    events = delivered(runtime, "T1", "T1", "T1")
    numbers = store.client.zrange(keys.arrivals("transid", key_of("T1")), 0, -1, withscores=True)
    assert [event_id for event_id, _ in numbers] == [e["id"] for e in events]
    assert [int(n) for _, n in numbers] == sorted({int(n) for _, n in numbers})  # rising
    for event in reversed(events[1:]):
        assert route_event(runtime, event) == ["queued"]
    assert route_event(runtime, events[0]) == ["delivered"]
    assert sent(sink) == [e["id"] for e in events] and scheduler.calls == []


def test_different_keys_do_not_wait_for_each_other(rig, sink):
    runtime, store, scheduler = rig
    first, second = delivered(runtime, "T1", "T2")
    assert route_event(runtime, second) == ["delivered"]
    assert route_event(runtime, first) == ["delivered"]


def test_retries_of_the_first_keep_the_next_parked_until_it_settles(rig, sink):
    runtime, store, scheduler = rig
    first, second = delivered(runtime, "T1", "T1")
    sink.script(Answer(503))
    assert route_event(runtime, first) == ["retry"]
    assert route_event(runtime, second) == ["queued"]
    assert [job["delivery_id"] for job, _ in scheduler.calls] == [did(first)]  # the retry
    retry = {**scheduler.calls.pop()[0], "not_before": None}
    copy = store.pending.get(deliver_member(did(second)))["args"][0]
    assert deliver_job(runtime, copy) == "queued"  # a stray copy: parked again, uncounted
    assert store.client.get(keys.delivery(did(second), "n")) is None
    assert sent(sink) == [first["id"]] and scheduler.calls == []
    assert deliver_job(runtime, retry) == "delivered"
    assert sent(sink) == [first["id"], first["id"], second["id"]] and scheduler.calls == []


def test_a_parked_delivery_is_nobodys_and_never_overdue(rig, sink):
    """Neither a take-over, the reconciliation after a failover (what the node owns) nor
    the sweeper (what is overdue) publishes a parked delivery: only its turn does; and a
    first taken over from a dead worker is still first."""
    runtime, store, scheduler = rig
    first, second = delivered(runtime, "T1", "T1")
    sink.script(Answer(503))
    assert route_event(runtime, first) == ["retry"]
    assert route_event(runtime, second) == ["queued"]
    member = deliver_member(did(second))
    store.pending.heartbeat([member])  # its task message was received here
    assert member not in dict(store.pending.owned())
    assert store.client.zscore(keys.PENDING, member) == math.inf
    retry = {**scheduler.calls.pop()[0], "not_before": None}
    assert store.ordering.begin(retry, 60)[:2] == ("go", 2)  # the retry is under way…
    taken = dict(store.pending.take_over("test-node"))  # …when its worker dies
    assert list(taken) == [deliver_member(did(first))]
    again = {**taken[deliver_member(did(first))]["args"][0], "not_before": None}
    woken = []  # the second, as the receiver gets it: this node's, due, held here

    def look(request) -> None:
        if request.json()["id"] == second["id"]:
            owned = dict(store.pending.owned())
            woken.append((store.client.zscore(keys.PENDING, member), member in owned))

    sink.on_request = look
    assert deliver_job(runtime, again) == "delivered"
    assert sent(sink) == [first["id"], first["id"], second["id"]]  # the first kept its turn
    ((due, owned),) = woken
    assert due < math.inf and owned


def test_a_routed_event_with_no_delivery_to_it_lets_the_key_go_on(rig, sink):
    """A later event waits for every earlier event of its key to be routed; one that goes
    elsewhere (a failed receipt: no route to ``hook``) lets it go."""
    runtime, store, scheduler = rig
    earlier, later = accept(
        runtime, ("T1", "receipt-failed-invalid-address.json"), ("T1", "receipt-delivered.json")
    )
    assert route_event(runtime, later) == ["queued"]
    (item,) = history.event_history(store, later["id"])
    assert item["deliveries"][0]["waiting"] == (
        f"waits its turn after {earlier['id']} (same transid), not routed yet"
    )
    assert route_event(runtime, earlier) == []  # unrouted: the later one's turn
    assert sent(sink) == [later["id"]]


def test_a_routing_given_up_lets_the_key_go_on(rig, sink):
    runtime, store, scheduler = rig
    earlier, later = delivered(runtime, "T1", "T1")
    assert route_event(runtime, later) == ["queued"]
    spec = store.pending.get(keys.route_member(earlier["id"]))
    woken = store.poisoned(keys.route_member(earlier["id"]), spec, "poison: test")
    assert [job["delivery_id"] for job in woken] == [did(later)]


def test_events_show_says_why_a_delivery_waits(rig, sink):
    runtime, store, scheduler = rig
    first, second = delivered(runtime, "T1", "T1")
    sink.script(Answer(503))
    route_event(runtime, first)
    route_event(runtime, second)
    (item,) = history.event_history(store, second["id"])
    (delivery,) = item["deliveries"]
    assert delivery["state"] == "pending"
    assert delivery["waiting"] == f"waits its turn after {first['id']} (same transid)"
    (head,) = history.event_history(store, first["id"])[0]["deliveries"]
    assert head["waiting"] is None  # in a retry's backoff, not parked


def test_skip_dead_letters_the_first_and_goes_on(rig, sink):
    runtime, store, scheduler = rig
    first, second = delivered(runtime, "T1", "T1")
    sink.script(Answer(400))
    assert route_event(runtime, second) == ["queued"]
    assert route_event(runtime, first) == ["dead_lettered"]
    assert sent(sink) == [first["id"], second["id"]]
    assert store.index.state(second["id"]) == "delivered"
    ruleset = runtime.rules.current
    (hook,) = destinations.list_destinations(store, ruleset.destinations)
    assert (hook.ordered_by, hook.blocked_keys) == ("transid", 0)


@pytest.fixture
def blocked(redis_server, sink):
    """The first of key T1 dead-lettered with on_failure: block; the second waits."""
    runtime, store, scheduler = make_rig(redis_server, sink, on_failure="block")
    first, second = delivered(runtime, "T1", "T1")
    sink.script(Answer(400))
    assert route_event(runtime, first) == ["dead_lettered"]
    assert route_event(runtime, second) == ["queued"]
    assert scheduler.calls == []
    return runtime, store, scheduler, first, second


def test_block_holds_the_key_and_shows_it(blocked, sink):
    runtime, store, scheduler, first, second = blocked
    ruleset = runtime.rules.current
    (hook,) = destinations.list_destinations(store, ruleset.destinations)
    assert hook.blocked_keys == 1
    assert [(b["value"], b["delivery_id"]) for b in hook.blocked] == [("T1", did(first))]
    (third,) = delivered(runtime, "T1")  # a later event of the key waits too
    assert route_event(runtime, third) == ["queued"]
    (item,) = history.event_history(store, second["id"])
    assert item["deliveries"][0]["waiting"] == (
        f"waits its turn after {first['id']} (same transid),"
        " whose dead letter holds the key (on_failure: block)"
    )
    (other,) = delivered(runtime, "T2")  # other keys go on
    assert route_event(runtime, other) == ["delivered"]


def test_a_replay_of_the_blocking_dead_letter_goes_first_then_the_key_goes_on(blocked, sink):
    runtime, store, scheduler, first, second = blocked
    publisher = Recorder()
    dead_letters.replay(store, publisher, [did(first)])
    ((_, (job,)),) = publisher.sent
    assert job["order"]["by"] == "transid"
    assert deliver_job(runtime, job) == "delivered"  # then the second, in its turn
    assert sent(sink) == [first["id"], first["id"], second["id"]]
    ruleset = runtime.rules.current
    assert destinations.list_destinations(store, ruleset.destinations)[0].blocked_keys == 0


@pytest.mark.parametrize("how", ["delete", "purge"])
def test_deleting_the_blocking_dead_letter_releases_the_key(blocked, sink, how):
    runtime, store, scheduler, first, second = blocked
    publisher = Recorder()
    if how == "delete":
        assert dead_letters.delete_dead_letter(store, did(first), publisher)
    else:
        assert dead_letters.purge(store, publisher=publisher) == 1
    ((name, (job,)),) = publisher.sent
    assert (name, job["delivery_id"]) == ("relay.deliver", did(second))
    assert deliver_job(runtime, job) == "delivered"
    ruleset = runtime.rules.current
    assert destinations.list_destinations(store, ruleset.destinations)[0].blocked_keys == 0
    (third,) = delivered(runtime, "T1")
    assert route_event(runtime, third) == ["delivered"]


def test_a_reroute_is_not_ordered(rig, sink):
    runtime, store, scheduler = rig
    first, second = delivered(runtime, "T1", "T1")
    sink.script(Answer(503))
    assert route_event(runtime, first) == ["retry"]
    assert route_event(runtime, second) == ["queued"]
    publisher = Recorder()
    (item,) = reroute(store, publisher, runtime.rules.current, [second["id"]]).rerouted
    ((_, (job,)),) = publisher.sent
    assert "order" not in job
    assert deliver_job(runtime, job) == "delivered"  # while the key's first still retries
    assert sent(sink) == [first["id"], second["id"]]


PLAIN_RULES = """
version: 1
destinations:
  plain: {{type: http, url: "{url}", timeout: 2s}}
{more}
routes:
  - {{name: messages, match: {{kind: inbound_message}}, to: [plain]}}
"""
ORDERED_TOO = """  hook: {{type: http, url: "{url}", timeout: 2s, ordered_by: transid}}"""


def commands_of_an_unordered_delivery(redis_server, sink, more: str) -> dict[str, int]:
    """What accepting (the web's code), routing and delivering one inbound message to an
    unordered destination makes Redis run: calls per command (scripts' inner commands
    included), after a first event has loaded the scripts."""
    rules = PLAIN_RULES.format(url=sink.url("/plain"), more=more.format(url=sink.url("/hook")))
    runtime, store, _ = in_process_runtime(redis_server.url, rules)
    web = SimpleNamespace(rules=runtime.rules.current, store=store)
    payload = json.loads((FIXTURES / "inbound-sms.json").read_text())
    for round_ in ("warm", "counted"):
        if round_ == "counted":
            store.client.config_resetstat()
        events, _ = build_events(payload, "default", frozenset())
        ingest.accept(web, events, [f"fp-{events[0]['id']}"])
        assert route_event(runtime, events[0]) == ["delivered"]
    stats = store.client.info("commandstats")
    return {name: stats[name]["calls"] for name in stats if name != "cmdstat_info"}


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's alone: its command statistics count no other
    test's thread or process still at work on the suite's server."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    yield server
    server.stop()


def test_an_unordered_delivery_costs_nothing_more_with_ordering_in_the_rules(own_redis, sink):
    """No extra command, so no extra round trip, for a delivery that is not ordered: the
    same as with no ordered destination in the rules at all."""
    without = commands_of_an_unordered_delivery(own_redis, sink, "")
    with_ordering = commands_of_an_unordered_delivery(own_redis, sink, ORDERED_TOO)
    assert with_ordering == without
    # round trips: the accept, the routing call, the gate (scripts), the settlement with
    # the gate's statistics (one transaction)
    assert (without["cmdstat_evalsha"], without["cmdstat_exec"]) == (3, 1), without


def test_an_ordered_task_message_is_held_by_the_worker_that_receives_it_at_once(rig, sink):
    """Not from its next heartbeat on: received by a worker that dies before its next beat,
    the first of a key would wait for the broker to deliver it again, and its key with it.
    Other task messages keep their heartbeat's batching."""
    runtime, store, scheduler = rig
    (first,) = delivered(runtime, "T1")
    sink.script(Answer(503))
    assert route_event(runtime, first) == ["retry"]
    store.client.delete(keys.owned("test-node"))  # the retries are another worker's now
    other = Heartbeat(store)
    ordered = deliver_member(did(first))
    other.received(task_id(ordered, at_once=True))
    assert ordered in dict(store.pending.owned())
    plain = "deliver:E9:plain"
    store.pending.register_now(plain, "relay.deliver", [{"delivery_id": "E9:plain"}])
    other.received(task_id(plain))
    assert plain not in dict(store.pending.owned())
