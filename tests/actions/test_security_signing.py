"""Outbound signatures verify with the Standard Webhooks reference library.

One real ``perform(...)`` per case against the local HTTP sink; the request it received is
checked with ``standardwebhooks.webhooks.Webhook(secret).verify(body, headers)``.
"""

from __future__ import annotations

import base64

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.worker.delivery import perform
from tests.worker.test_delivery import SETTINGS, job_for, rules

OLD = "whsec_" + base64.b64encode(b"old signing key, 32 bytes long!!").decode()
NEW = "whsec_" + base64.b64encode(b"new signing key, also 32 bytes!!").decode()
OTHER = "whsec_" + base64.b64encode(b"a key nobody configured........").decode()


def deliver(sink, secrets: str, body: str = "event"):
    destination, job = job_for(
        rules(sink.url(), f'sign: {{secret: "{secrets}"}}\n    body: {body}')
    )
    assert perform(destination, job, SETTINGS).ok
    (request,) = sink.requests
    return request, job


def headers_of(request) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers}


def test_a_whsec_signed_delivery_verifies(sink):
    request, job = deliver(sink, NEW)
    payload = Webhook(NEW).verify(request.body, headers_of(request))
    assert payload["id"] == job["event"]["id"]
    assert headers_of(request)["webhook-id"] == job["delivery_id"]


@pytest.mark.parametrize(
    "body",
    ["event", "raw", """'{"from": {{ event.sender|tojson }}, "text": {{ event.text|tojson }}}'"""],
)
def test_every_body_kind_verifies(sink, body):
    # (the library also parses the body as JSON, so the template renders JSON)
    request, _ = deliver(sink, NEW, body)
    Webhook(NEW).verify(request.body, headers_of(request))


def test_with_two_rotated_secrets_either_one_verifies(sink):
    request, _ = deliver(sink, f"{OLD} {NEW}")
    headers = headers_of(request)
    assert len(headers["webhook-signature"].split()) == 2
    Webhook(OLD).verify(request.body, headers)
    Webhook(NEW).verify(request.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(request.body, headers)


def test_a_raw_text_secret_verifies_as_its_utf8_bytes(sink):
    request, _ = deliver(sink, "plain-text-secret")
    Webhook(b"plain-text-secret").verify(request.body, headers_of(request))


def test_a_tampered_body_or_id_does_not_verify(sink):
    request, _ = deliver(sink, NEW)
    headers = headers_of(request)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(request.body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(request.body, {**headers, "webhook-id": "another:id"})
