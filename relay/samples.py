"""A sample delivery receipt for the quickstart ``curl`` (the vendor's documented example)."""

import json

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
    body = json.dumps(SAMPLE_RECEIPT, separators=(",", ":"))
    return f"curl -sS -X POST {url} -H 'Content-Type: application/json' -d '{body}'"
