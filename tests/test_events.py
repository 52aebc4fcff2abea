"""The normalized event: fields derived from payloads."""

import pytest

from relay.events import new_id, rerouted_delivery_id, routing_mark
from relay.parsing import build_events, end_user_and_business, keyword, parse_callback
from tests.conftest import load_fixture


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  help!", "HELP"),
        ("Stop", "STOP"),
        ("stop.", "STOP"),
        ('"JOIN" now', "JOIN"),
        ("Ínfo please", "INFO"),
        ("¡Hola!", "HOLA"),
        ("... yes", "YES"),
        ("", ""),
        ("   ", ""),
        ("!!!", ""),
        ("12345", "12345"),
        ("opt-out", "OPT-OUT"),
    ],
)
def test_keyword_is_first_word_upper_without_punctuation_or_accents(text, expected):
    assert keyword(text) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("", {}),
        ('{"campaign": "spring", "n": 2}', {"campaign": "spring", "n": 2}),
        ("campaign=spring;cust=42", {"campaign": "spring", "cust": "42"}),
        ("campaign=spring&cust=42", {"campaign": "spring", "cust": "42"}),
        ("a=x%20y", {"a": "x y"}),
        ("return callbackdata", {}),
        ("[1, 2]", {}),
        ("{not json", {}),
        ("a=1;garbage", {}),
    ],
)
def test_callback_is_parsed_from_json_object_or_pairs(data, expected):
    assert parse_callback(data) == expected


@pytest.mark.parametrize(
    ("oa", "da", "own", "expected"),
    [
        ("441157070619", "12345", set(), ("441157070619", "12345")),
        ("441157070619", "12345", {"12345"}, ("441157070619", "12345")),
        ("12345", "441157070619", {"12345"}, ("441157070619", "12345")),
        ("+1 2345", "441157070619", {"12345"}, ("441157070619", "+1 2345")),
        ("111", "222", {"999"}, ("111", "222")),
    ],
)
def test_sender_is_the_side_that_is_not_one_of_our_numbers(oa, da, own, expected):
    assert end_user_and_business(oa, da, own) == expected


def test_ids_are_unique_and_sortable_by_time():
    early, late = new_id(1_700_000_000.000), new_id(1_700_000_000.002)
    assert len(early) == 26 and early < late
    assert len({new_id() for _ in range(1000)}) == 1000


def _event(payload, own=frozenset()):
    events, _ = build_events(payload, "default", own)
    return events[0]


def test_failed_receipt_event_has_every_field():
    payload = load_fixture("receipt-failed-invalid-address.json")
    event = _event(payload)
    assert event.pop("received_at").endswith("Z")
    assert len(event.pop("id")) == 26
    assert event == {
        "kind": "delivery_receipt",
        "source": "default",
        "status": "Failed",
        "final": True,
        "code": "7102",
        "code_description": "Invalid address",
        "description": "Invalid address",
        "additional_info": "",
        "destination": "9189xxxxxxxx",
        "channel": "SMS",
        "timestamp": "2022-10-10T13:53:13.749+01:00",
        "transid": "dba07fc1-0d68-4ce7-ae9f-d7ec539ac832",
        "subtid": "",
        "correlation_id": "",
        "callback_data": "",
        "callback": {},
        "raw": payload,
    }


def test_inbound_event_has_every_field():
    payload = load_fixture("inbound-sms.json")
    event = _event(payload)
    del event["id"], event["received_at"]
    assert event == {
        "kind": "inbound_message",
        "source": "default",
        "tid": "105eddec-dd53-433d-9d6f-37f10ac76a06",
        "user_id": "9009",
        "network_id": "10",
        "timestamp": "2024-01-07T14:36:09.266Z",
        "channel": "SMS",
        "sender": "441157070619",
        "recipient": "1XXXX661353",
        "text": "Incoming SMS Text",
        "keyword": "INCOMING",
        "raw": payload,
    }


@pytest.mark.parametrize(
    ("fixture", "status", "final", "code", "description"),
    [
        ("receipt-submitted.json", "Submitted", False, "7501", "Submitted to the network"),
        ("receipt-delivered.json", "Delivered", True, "7500", "Delivered"),
        ("receipt-clicked.json", "Clicked", True, "7528", "Link clicked"),
        ("receipt-failed-invalid-sender.json", "Failed", True, "7101", "Invalid sender id"),
        ("receipt-failed-length-exceeded.json", "Failed", True, "7107", "Message length exceeded"),
        ("receipt-undelivered-dynamic.json", "Un-Delivered", True, "<dynamic code>", ""),
    ],
)
def test_receipt_status_final_and_code_description(fixture, status, final, code, description):
    event = _event(load_fixture(fixture))
    assert (event["status"], event["final"], event["code"], event["code_description"]) == (
        status,
        final,
        code,
        description,
    )


def test_clicked_receipt_without_subtid_keeps_correlation_and_callback_data():
    event = _event(load_fixture("receipt-clicked.json"))
    assert event["subtid"] == ""
    assert event["correlation_id"] == "3bd8edf31c81-4b72d8a2-290d-49e2-993e"
    assert event["callback_data"] == "return callbackdata"
    assert event["channel"] == "sms"
    assert event["additional_info"].startswith("Mozilla/5.0")


def test_numeric_code_and_lowercase_keys_are_accepted():
    payload = {
        "deliveryinfonotification": {
            "DeliveryInfo": {
                "deliverystatus": "Delivered",
                "code": 7500,
                "description": "ok",
                "CHANNEL": "x",
                "timestamp": "2022-10-10 13:53:13",
                "messageCount": 2,
                "carrier": "vodafone",
            },
            "transid": "t1",
            "callbackdata": "campaign=x",
        }
    }
    event = _event(payload)
    assert event["code"] == "7500"
    assert event["code_description"] == "Delivered"
    assert event["description"] == "ok"
    assert event["timestamp"] == "2022-10-10 13:53:13"
    assert event["callback"] == {"campaign": "x"}
    assert event["raw"] == payload


def test_inbound_variants_userld_channel_and_timestamp_without_offset():
    payload = {
        "userld": "9009",
        "Channel": "sms",
        "oa": "441157070619",
        "da": "12345",
        "message": "  stop!",
        "tid": "0044_abc",
        "datetime": "2024-01-07 14:36:09",
        "x_networkid": 10,
        "message_source": "x",
        "messageCount": 1,
    }
    event = _event(payload, own=frozenset({"12345"}))
    assert event["user_id"] == "9009"
    assert event["channel"] == "sms"
    assert event["network_id"] == "10"
    assert event["timestamp"] == "2024-01-07 14:36:09"
    assert event["keyword"] == "STOP"
    assert (event["sender"], event["recipient"]) == ("441157070619", "12345")


def test_inbound_oa_is_business_when_it_is_one_of_our_numbers():
    payload = {"oa": "12345", "da": "447700900123", "message": "HELP"}
    event = _event(payload, own=frozenset({"12345"}))
    assert (event["sender"], event["recipient"]) == ("447700900123", "12345")


def test_inbound_ts_is_used_when_datetime_is_missing():
    event = _event({"oa": "1", "da": "2", "message": "x", "ts": "2015-04-12T13:00:19Z"})
    assert event["timestamp"] == "2015-04-12T13:00:19Z"


def test_callback_data_nested_past_the_body_limit_reads_as_empty():
    """A callbackData string holding JSON nested 960 deep (fine for json.loads here) would
    reach every later parser of the event; it reads as {} instead."""
    deep = '{"a":' * 960 + "1" + "}" * 960
    assert parse_callback(deep) == {}
    ok = '{"a":' * 32 + "1" + "}" * 32
    assert parse_callback(ok) != {}


def test_callback_data_that_reads_as_empty_says_why():
    from relay.parsing import receipt_event

    fields = {"status": "Delivered", "callback_data": '{"a":' * 40 + "1" + "}" * 40}
    event = receipt_event(fields, {}, "default", "01A")
    assert event["callback"] == {} and "nested deeper than 32" in event["callback_error"]
    broken = receipt_event({"status": "Delivered", "callback_data": '{"a": '}, {}, "d", "01B")
    assert broken["callback_error"].startswith("callbackData: not valid JSON")
    plain = receipt_event({"status": "Delivered", "callback_data": "campaign-7"}, {}, "d", "01C")
    assert "callback_error" not in plain


def test_routing_mark_reads_what_rerouted_delivery_id_writes():
    target = rerouted_delivery_id("E1", "hook", 3).partition(":")[2]
    assert routing_mark(target) == ("hook", 3)
    assert routing_mark("hook") == ("hook", 1)
    assert routing_mark("a~b") == ("a~b", 1)
