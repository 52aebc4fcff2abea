"""One attempt at one destination, in two steps per destination type:

- ``prepare(destination, job, settings) -> dict``: render the templates into what will be
  sent (pure; TemplateError on failure). ``relay rules test`` shows this, with secrets
  masked by :func:`redact`;
- ``send(destination, prepared, job, settings) -> Outcome``: send it once.

Secrets (service key, Slack token, signing secrets, SMTP password) are never in the
prepared dict: ``send`` takes them from the destination or the settings.
"""

from __future__ import annotations

import json
import re

from relay.actions import Outcome, send_http, send_log
from relay.actions.email import parse_smtp_url, send_email
from relay.actions.http import content_type_for
from relay.actions.signing import standard_webhooks_signer
from relay.actions.slack import build_payload, send_slack_api, send_slack_webhook
from relay.actions.sms import send_sms
from relay.rules import (
    Destination,
    EmailDestination,
    HttpDestination,
    LogDestination,
    SlackDestination,
    SmsReplyDestination,
    render,
)
from relay.settings import Settings, digits

#: header names whose values ``redact`` hides
SECRET_HEADER = re.compile(r"authorization|token|secret|key|cookie|signature|password", re.I)
MASK = "****"


def _render(template, job: dict) -> str:
    """Rendered text fit to send: a lone surrogate from a payload becomes ``?`` (no
    encoder on the way out — SMTP, JSON for Slack and Webex Connect — accepts one)."""
    text = render(template, job["event"], job["route"], job["destination"])
    return text.encode("utf-8", "replace").decode("utf-8")


def prepare(destination: Destination, job: dict, settings: Settings) -> dict:
    preparer = _PREPARERS.get(type(destination))
    if preparer is None:
        raise ValueError(f"destination type {destination.type!r} is not supported")
    return preparer(destination, job, settings)


def send(destination: Destination, prepared: dict, job: dict, settings: Settings) -> Outcome:
    return _SENDERS[type(destination)](destination, prepared, job, settings)


# -- http ---------------------------------------------------------------------------------


def _prepare_http(destination: HttpDestination, job: dict, settings: Settings) -> dict:
    body, kind = http_body(destination, job)
    return {
        "method": destination.method,
        "url": destination.url,
        "headers": {name: _render(value, job) for name, value in destination.headers.items()},
        "content_type": content_type_for(kind, body),
        "body": body.decode("utf-8", "replace"),
    }


def http_body(destination: HttpDestination, job: dict) -> tuple[bytes, str]:
    """The request body and its kind (``event``, ``raw`` or ``template``)."""
    event = job["event"]
    if destination.body == "event":
        return _json(event), "event"
    if destination.body == "raw":
        return _json(event["raw"]), "raw"
    return _render(destination.body, job).encode(), "template"


def _json(value: object) -> bytes:
    """Compact UTF-8 JSON; \\u escapes only for text UTF-8 cannot carry (lone surrogates)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def _send_http(destination: HttpDestination, prepared: dict, job: dict, settings) -> Outcome:
    signer = standard_webhooks_signer(destination.sign.secret) if destination.sign else None
    return send_http(
        prepared["url"],
        prepared["body"].encode(),
        delivery_id=job["delivery_id"],
        method=prepared["method"],
        headers=prepared["headers"],
        content_type=prepared["content_type"],
        timeout=destination.timeout,
        signer=signer,
    )


# -- log ----------------------------------------------------------------------------------


def _prepare_log(destination: LogDestination, job: dict, settings: Settings) -> dict:
    return {"line": _render(destination.text, job)}


def _send_log(destination, prepared: dict, job: dict, settings) -> Outcome:
    return send_log(prepared["line"])


# -- email --------------------------------------------------------------------------------


def _prepare_email(destination: EmailDestination, job: dict, settings: Settings) -> dict:
    return {
        "from": settings.mail_from,
        "to": list(destination.to),
        "cc": list(destination.cc),
        "subject": _render(destination.subject, job),
        "body": _render(destination.body, job),
        "html": _render(destination.html, job) if destination.html else None,
    }


def _send_email(destination, prepared: dict, job: dict, settings: Settings) -> Outcome:
    return send_email(
        parse_smtp_url(settings.smtp_url or ""),
        prepared["from"],
        prepared["to"],
        prepared["cc"],
        prepared["subject"],
        prepared["body"],
        prepared["html"],
        headers={"X-Relay-Delivery-Id": job["delivery_id"]},
    )


# -- slack --------------------------------------------------------------------------------


def _prepare_slack(destination: SlackDestination, job: dict, settings: Settings) -> dict:
    blocks = _render(destination.blocks, job) if destination.blocks else None
    payload = build_payload(_render(destination.text, job), blocks)
    if destination.webhook_url:
        return {"webhook_url": destination.webhook_url, "payload": payload}
    return {
        "api": f"{settings.slack_api_url}/chat.postMessage",
        "channel": destination.channel,
        "payload": payload,
    }


def _send_slack(destination: SlackDestination, prepared: dict, job: dict, settings) -> Outcome:
    if destination.webhook_url:
        return send_slack_webhook(destination.webhook_url, prepared["payload"])
    return send_slack_api(
        destination.token, destination.channel, prepared["payload"], api_url=settings.slack_api_url
    )


# -- sms_reply ----------------------------------------------------------------------------


def _prepare_sms(destination: SmsReplyDestination, job: dict, settings: Settings) -> dict:
    event = job["event"]
    return {
        "url": f"{settings.webex_api_url.rstrip('/')}/v1/sms/messages",
        "from": digits(destination.from_ or event.get("recipient", "")),
        "to": "+" + digits(event.get("sender", "")),
        "content": _render(destination.text, job),
        "correlationId": event["id"],
        "idempotencyKey": job["delivery_id"],
    }


def _send_sms(destination, prepared: dict, job: dict, settings: Settings) -> Outcome:
    return send_sms(
        settings.webex_api_url.rstrip("/"),
        settings.webex_service_key or "",
        from_=prepared["from"],
        to=prepared["to"],
        content=prepared["content"],
        correlation_id=prepared["correlationId"],
        idempotency_key=prepared["idempotencyKey"],
        key_header=settings.webex_key_header,
    )


_PREPARERS = {
    HttpDestination: _prepare_http,
    LogDestination: _prepare_log,
    EmailDestination: _prepare_email,
    SlackDestination: _prepare_slack,
    SmsReplyDestination: _prepare_sms,
}
_SENDERS = {
    HttpDestination: _send_http,
    LogDestination: _send_log,
    EmailDestination: _send_email,
    SlackDestination: _send_slack,
    SmsReplyDestination: _send_sms,
}


def redact(prepared: dict) -> dict:
    """``prepared`` fit to show: secret-looking header values and webhook URLs masked."""
    shown = dict(prepared)
    if "headers" in shown:
        shown["headers"] = {
            name: MASK if SECRET_HEADER.search(name) else value
            for name, value in shown["headers"].items()
        }
    if "webhook_url" in shown:
        shown["webhook_url"] = _mask_url_path(shown["webhook_url"])
    return shown


def _mask_url_path(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/xyz`` → ``https://hooks.slack.com/****``."""
    match = re.match(r"^(\w+://[^/]+/)", url)
    return (match.group(1) if match else "") + MASK
