"""Sample payloads (the vendor's documented examples): the quickstart `curl`, template trials."""

import json

from relay.events import Event
from relay.parsing import build_events

SAMPLE_RECEIPT = {
    "deliveryInfoNotification": {
        "deliveryInfo": {
            "timeStamp": "2022-10-10T13:53:13.749+01:00",
            "Description": "Delivered",
            "code": "7500",
            "deliveryChannel": "SMS",
            "additionalInfo": "",
            "destination": "9189xxxxxxxx",
            "destinationType": "msisdn",
            "deliveryStatus": "Delivered",
        },
        "subtid": "",
        "transid": "7f3af32c-8d6a-4173-b1c8-4805135ada71",
        "callbackData": "",
        "correlationid": "",
    }
}


def sample_curl(url: str) -> str:
    """A ``curl`` command that POSTs :data:`SAMPLE_RECEIPT` to ``url``."""
    body = json.dumps(SAMPLE_RECEIPT, separators=(",", ":"))
    return f"curl -sS -X POST {url} -H 'Content-Type: application/json' -d '{body}'"


SAMPLE_INBOUND = {
    "userId": "9009",
    "channel": "SMS",
    "oa": "441157070619",
    "da": "12345",
    "message": "HELP please",
    "tid": "105eddec-dd53-433d-9d6f-37f10ac76a06",
    "datetime": "2024-01-07T14:36:09.266Z",
    "x_networkid": "10",
}


def sample_events() -> list[Event]:
    """A normalized delivery receipt and inbound message, e.g. to try templates on."""
    events, _ = build_events([SAMPLE_RECEIPT, SAMPLE_INBOUND], "default", frozenset())
    return events
