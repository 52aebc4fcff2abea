"""Hostile text end to end (issue 29): a lone surrogate in any documented string field
(written as a JSON escape, as the fuzz of the public webhook wrote it) is answered 200 and
then delivered within seconds, its text valid (U+FFFD). Real Redis, a real worker, a real
local HTTP receiver.
"""

from __future__ import annotations

import json

import pytest

from tests.cli.test_dlq_and_events_commands import rules
from tests.harness import wait_until
from tests.test_text import documents_with, encodable, receipt_with

pytestmark = pytest.mark.e2e

BAD = "X\ud800Y"
CALLBACKS = ['{"a": "X\\ud800Y"}', '{"X\\udfffY": 1}', '{"a": 1e999}', '{"a": NaN}']


def test_a_lone_surrogate_in_any_documented_field_is_accepted_then_delivered(start_relay, sink):
    relay = start_relay(rules(sink, "hook"))
    documents = documents_with(BAD) + [
        ("callbackData", receipt_with("callbackData", c)) for c in CALLBACKS
    ]
    ids = {}
    for field, document in documents:
        body = json.dumps(document).encode()  # ASCII: the surrogate as a \ud800 escape
        answer = relay.client.post(
            "/webhooks/webex-connect", data=body, content_type="application/json"
        )
        assert answer.status_code == 200, (field, answer.json)
        (event_id,) = answer.json["accepted"]
        ids[event_id] = field
    requests = sink.wait_for(len(ids), timeout=20)
    delivered = {request.json()["id"] for request in requests}
    assert delivered == set(ids), [ids[i] for i in set(ids) - delivered]
    for request in requests:
        assert encodable(request.json()), request.body
    wait_until(lambda: relay.store.pending.count() == 0)
    log = relay.worker.log_path.read_bytes()
    assert b"unroutable" not in log and b"Traceback" not in log
