"""The webhook endpoint gives each accepted event its accept number for the keys the rules'
destinations are ordered by (``ordered_by``), in the same Redis call that accepts it."""

from __future__ import annotations

from relay.settings import load_settings
from relay.state import keys
from relay.state.ordering import key_of
from relay.web.app import create_app
from tests.harness import relay_env

RULES = """
version: 1
destinations:
  crm: {type: http, url: "http://127.0.0.1:9/crm", ordered_by: transid}
routes: [{name: all, to: [crm]}]
"""


def receipt(transid: str, number: int) -> dict:
    return {
        "deliveryInfoNotification": {
            "deliveryInfo": {"deliveryStatus": "Delivered", "code": "7500"},
            "transid": transid,
            "callbackData": f"n={number}",
        }
    }


def test_a_batch_takes_accept_numbers_in_its_order_per_key(redis_server, redis_client, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    client = create_app(load_settings(relay_env(redis_server.url, RELAY_RULES=str(rules))))
    batch = [
        receipt("T1", 1),
        receipt("T2", 1),
        receipt("T1", 2),
        {"oa": "447700900123", "da": "12345", "message": "HELLO"},  # no transid: not ordered
        receipt("T1", 3),
    ]
    answer = client.test_client().post("/webhooks/webex-connect", json=batch)
    assert answer.status_code == 200, answer.json
    ids = answer.json["accepted"]
    t1 = redis_client.zrange(keys.arrivals("transid", key_of("T1")), 0, -1, withscores=True)
    t2 = redis_client.zrange(keys.arrivals("transid", key_of("T2")), 0, -1, withscores=True)
    assert [event_id for event_id, _ in t1] == [ids[0], ids[2], ids[4]]
    assert [event_id for event_id, _ in t2] == [ids[1]]
    numbers = [number for _, number in t1]
    assert numbers == sorted(set(numbers))  # distinct, rising in batch order
    assert t2[0][1] < t1[1][1]  # one sequence: T2's item came between T1's first two
    assert redis_client.ttl(keys.arrivals("transid", key_of("T1"))) > 0
    assert len(list(redis_client.scan_iter("relay:arrivals:*"))) == 2
