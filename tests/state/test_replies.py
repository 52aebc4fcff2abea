"""Opt-outs against the suite's real Redis, and the same decisions on the simulated state of
dry runs and rule cases: the later message decides, whatever the order in which messages
are processed."""

from __future__ import annotations

import pytest

from relay.rules import load_rules_text
from relay.rules.replies import OptWords, SimulatedOptOuts, apply_opt_keywords
from relay.settings import load_settings
from relay.state import connect
from relay.state.replies import ReplyState


@pytest.fixture(params=["redis", "simulated"])
def state(request, redis_server):
    """Where opt-outs are kept: the worker's Redis, or a dry run's memory."""
    if request.param == "simulated":
        return SimulatedOptOuts()
    return ReplyState(connect(redis_server.url))


def message(event_id: str, sender: str, keyword: str, sent: str) -> dict:
    return {
        "id": event_id,
        "kind": "inbound_message",
        "sender": sender,
        "keyword": keyword,
        "timestamp": sent,
        "received_at": "2026-01-01T00:00:00.000Z",
    }


def test_a_stop_sent_after_a_start_wins_when_processed_first(state):
    stop = message("01B", "447700900123", "STOP", "2026-01-01T10:00:00.002Z")
    start = message("01A", "447700900123", "START", "2026-01-01T10:00:00.001Z")
    apply_opt_keywords(state, stop)
    apply_opt_keywords(state, start)  # older: changes nothing
    assert state.opted_out("+44 7700 900123")
    assert stop["sender_opted_out"] is True and start["sender_opted_out"] is True


def test_same_time_arrival_breaks_the_tie_and_a_later_start_opts_in_again(state):
    apply_opt_keywords(state, message("01B", "447700900124", "STOP", "2026-01-01 10:00:00"))
    apply_opt_keywords(state, message("01A", "447700900124", "START", "2026-01-01 10:00:00"))
    assert state.opted_out("447700900124")  # same time: 01B arrived later
    later = message("01C", "447700900124", "START", "2026-01-01 10:00:01")
    apply_opt_keywords(state, later)
    assert not state.opted_out("447700900124") and later["sender_opted_out"] is False


def test_an_opt_out_stored_before_orders_were_kept_still_counts(redis_server):
    client = connect(redis_server.url)
    client.set("relay:optout:447700900125", "1")
    state = ReplyState(client)
    assert state.opted_out("447700900125")
    apply_opt_keywords(state, message("01A", "447700900125", "START", "2026-01-01 10:00:00"))
    assert not state.opted_out("447700900125")


@pytest.mark.parametrize(
    "text",
    ["Stop!", "stop all", "Opt-Out", "OPT OUT", "\uff33\uff34\uff2f\uff30", "Arrêt", "unsub"],
)
def test_opt_out_words_as_people_write_them(state, text):
    event = {**message("01A", "447700900126", "", "2026-01-01 10:00:00"), "text": text}
    apply_opt_keywords(state, event)
    assert event["sender_opted_out"] is True and state.opted_out("447700900126")


def test_a_message_that_contains_an_opt_out_word_is_ambiguous_not_an_opt_out(state):
    event = {
        **message("01A", "447700900127", "", "2026-01-01 10:00:00"),
        "text": "please stop texting me",
    }
    apply_opt_keywords(state, event)
    assert event["sender_opted_out"] is False and event["opt_out_ambiguous"] is True
    assert not state.opted_out("447700900127")


def test_opt_words_are_extended_by_settings(state):
    settings = load_settings(
        {"RELAY_OPT_OUT_KEYWORDS": "Halt, no more", "RELAY_OPT_IN_KEYWORDS": "go"}
    )
    assert settings.opt_out_words == {"HALT", "NO MORE"} and settings.opt_in_words == {"GO"}
    event = {**message("01A", "447700900128", "", "2026-01-01 10:00:00"), "text": "no more!"}
    apply_opt_keywords(state, event, OptWords.of(settings))
    assert state.opted_out("447700900128")


def test_a_message_that_begins_with_an_opt_out_word_is_an_opt_out(state):
    event = {**message("01A", "447700900129", "", "2026-01-01 10:00:00"), "text": "STOP please"}
    apply_opt_keywords(state, event)
    assert state.opted_out("447700900129") and "opt_out_ambiguous" not in event


def test_rules_can_route_an_ambiguous_opt_out(redis_server):
    ruleset = load_rules_text(
        "version: 1\ndestinations: {ops: {type: log}}\n"
        "routes: [{name: unclear, match: {opt_out_ambiguous: true}, to: [ops]}]\n"
    )
    event = {"kind": "inbound_message", "opt_out_ambiguous": True}
    assert [match.route for match in ruleset.match(event)] == ["unclear"]
