"""The ``slack`` destination: an incoming webhook or the Web API's chat.postMessage.

:func:`prepare` renders the message from a job; :func:`send` posts it; :func:`check`
tries a ``blocks`` template string on sample events when the rules load. ``text`` and
``blocks`` templates escape Slack's control characters in what they interpolate (see
:mod:`relay.rules.templates`); structured ``blocks`` are built as data, then serialised.
Both senders (:func:`send_slack_webhook`, :func:`send_slack_api`) return an
:class:`Outcome` and never raise for a network or Slack failure. HTTP 429 and 5xx are
transient (``Retry-After`` honoured); so are the Web API's own "try again" errors
(:data:`TRANSIENT_API_ERRORS`); every other Slack error is permanent. Error texts quote
Slack's error code, never the token or the webhook URL (both secrets).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

import requests

from relay.actions.base import (
    Kind,
    Outcome,
    classify_http,
    json_object,
    parse_retry_after,
    render_payload,
    render_text,
    shorten,
)
from relay.actions.http import Answer, exchange
from relay.events import Job
from relay.rules import (
    SlackDestination,
    Structured,
    Template,
    TemplateBudgetError,
    TemplateError,
    render,
)
from relay.samples import sample_events
from relay.settings import Settings

#: the Web API base of :func:`send_slack_api`
DEFAULT_API_URL = "https://slack.com/api"

#: seconds, for connecting and for each read
DEFAULT_TIMEOUT = 10.0

#: Web API ``error`` codes worth another try; any other error is permanent
TRANSIENT_API_ERRORS: frozenset[str] = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

JSON_UTF8 = "application/json; charset=utf-8"


def prepare(destination: SlackDestination, job: Job, settings: Settings) -> dict[str, Any]:
    """The message to post: the webhook URL, or the API URL and channel, and the payload."""
    blocks: str | list[Any] | None = None
    if isinstance(destination.blocks, Template):
        blocks = render_text(destination.blocks, job)
    elif isinstance(destination.blocks, Structured):
        blocks = render_payload(destination.blocks, job)
    payload = build_payload(render_text(destination.text, job), blocks)
    if destination.webhook_url:
        return {"webhook_url": destination.webhook_url, "payload": payload}
    return {
        "api": f"{settings.slack_api_url}/chat.postMessage",
        "channel": destination.channel,
        "payload": payload,
    }


def send(
    destination: SlackDestination, prepared: dict[str, Any], job: Job, settings: Settings
) -> Outcome:
    """Post ``prepared`` to the webhook, or with the token to ``RELAY_SLACK_API_URL``."""
    if destination.webhook_url:
        return send_slack_webhook(destination.webhook_url, prepared["payload"])
    token, channel = destination.token or "", destination.channel or ""  # both set: see schema
    return send_slack_api(token, channel, prepared["payload"], api_url=settings.slack_api_url)


def check(destination: SlackDestination, settings: Settings) -> list[str]:
    """A ``blocks`` template string must render to a JSON list of block objects.

    It is tried on a sample delivery receipt and a sample inbound message; a template
    that fails for one kind (a field the other kind has) is left for real events to
    decide; one that passes its render budget is a problem whatever the kind. At most one
    problem is reported. Structured blocks were checked at load.
    """
    if not isinstance(destination.blocks, Template):
        return []
    problems = []
    for event in sample_events():
        try:
            text = render(destination.blocks, event, "sample", destination.name)
        except TemplateBudgetError as exc:  # whatever the event: the template's own fault
            problems.append(f"blocks: {exc}")
            continue
        except TemplateError:
            continue  # a field of the other kind: decided when a real event comes
        try:
            blocks = json.loads(text)
        except ValueError as exc:
            problems.append(f"blocks: does not render to JSON for a sample {event['kind']}: {exc}")
            continue
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            problems.append("blocks: must render to a JSON list of block objects")
    return problems[:1]


def build_payload(text: str, blocks: str | list[Any] | None) -> dict[str, Any]:
    """``{"text": text}``, plus ``"blocks"`` when given: JSON text or the list itself.

    They must be a (JSON) list of block objects, each with a ``"type"``; anything else is a
    ValueError saying what is wrong (the caller makes it a permanent failure).
    """
    payload: dict[str, Any] = {"text": text}
    if blocks is not None:
        payload["blocks"] = _blocks(blocks)
    return payload


def _blocks(given: str | list[Any]) -> list[dict[str, Any]]:
    if isinstance(given, list):
        blocks: Any = given
    else:
        try:
            blocks = json.loads(given)
        except ValueError as exc:
            raise ValueError(f"blocks is not valid JSON: {exc}") from None
    if not isinstance(blocks, list):
        raise ValueError(f"blocks must be a JSON list of objects, got {_json_type(blocks)}")
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise ValueError(f"blocks[{index}] must be an object, got {_json_type(block)}")
        if not isinstance(block.get("type"), str):
            raise ValueError(f'blocks[{index}] has no "type"')
    return blocks


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def send_slack_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> Outcome:
    """POST ``payload`` as JSON to an incoming-webhook ``url``; classify Slack's answer.

    Slack answers 200 ``ok``; its errors are plain-text codes with a 4xx status
    (``invalid_payload``, ``channel_not_found``, ``no_service``, ``channel_is_archived`` …),
    which are permanent with the code in the error. 429 and 5xx are transient.
    ``session`` defaults to this process's shared one.
    """
    started = time.monotonic()
    answer = exchange(
        "POST", url, _encode(payload), {"Content-Type": JSON_UTF8}, timeout, session, quiet=True
    )
    outcome = answer if isinstance(answer, Outcome) else _webhook_outcome(answer)
    return dataclasses.replace(outcome, latency=time.monotonic() - started)


def send_slack_api(
    token: str,
    channel: str,
    payload: Mapping[str, Any],
    *,
    api_url: str = DEFAULT_API_URL,
    timeout: float = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> Outcome:
    """POST ``{"channel": channel, **payload}`` to ``{api_url}/chat.postMessage``.

    Authenticates with ``Authorization: Bearer <token>``. Slack answers 200 with
    ``{"ok": true}`` or ``{"ok": false, "error": "<code>"}``: codes in
    :data:`TRANSIENT_API_ERRORS`, HTTP 429 and 5xx are transient; every other code
    (``invalid_auth``, ``channel_not_found``, ``not_in_channel`` …, and unknown ones) is
    permanent, the error reading e.g. "Slack API error: channel_not_found".
    """
    started = time.monotonic()
    headers = {"Content-Type": JSON_UTF8, "Authorization": f"Bearer {token}"}
    body = _encode({"channel": channel, **payload})
    url = f"{api_url.rstrip('/')}/chat.postMessage"
    answer = exchange("POST", url, body, headers, timeout, session, quiet=True)
    outcome = answer if isinstance(answer, Outcome) else _api_outcome(answer)
    if outcome.error and token and token in outcome.error:  # Slack never echoes it; be sure
        outcome = dataclasses.replace(outcome, error=outcome.error.replace(token, "***"))
    return dataclasses.replace(outcome, latency=time.monotonic() - started)


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _webhook_outcome(answer: Answer) -> Outcome:
    kind = classify_http(answer.status)
    if kind == "ok":
        return Outcome("ok", status=answer.status)
    text = _text(answer.body)
    error = f"HTTP {answer.status}: {text}" if text else f"HTTP {answer.status}"
    return _failed(kind, answer, error)


def _api_outcome(answer: Answer) -> Outcome:
    reply = json_object(answer.body)
    if 200 <= answer.status < 300 and reply.get("ok") is True:
        return Outcome("ok", status=answer.status)
    code = str(reply.get("error") or "")
    if code:
        error = f"Slack API error: {code}{_details(reply)}"
    else:
        error = f"HTTP {answer.status}: {_text(answer.body) or '(no body)'}"
    return _failed(_api_kind(answer.status, code), answer, error)


def _api_kind(status: int, code: str) -> Kind:
    """429, 5xx and the transient codes retry; a 2xx without a readable answer does too."""
    if classify_http(status) == "transient" or code in TRANSIENT_API_ERRORS:
        return "transient"
    if 200 <= status < 300 and not code:
        return "transient"  # not Slack's JSON: a proxy or an outage page, most likely
    return "permanent"


def _details(reply: Mapping[str, Any]) -> str:
    """Slack's explanations of e.g. ``invalid_blocks``, from ``response_metadata.messages``."""
    metadata = reply.get("response_metadata")
    messages = metadata.get("messages") if isinstance(metadata, dict) else None
    if not isinstance(messages, list) or not messages:
        return ""
    return " (" + "; ".join(str(m) for m in messages) + ")"


def _failed(kind: Kind, answer: Answer, error: str) -> Outcome:
    retry_after = parse_retry_after(answer.retry_after) if kind == "transient" else None
    return Outcome(kind, status=answer.status, error=shorten(error), retry_after=retry_after)


def _text(body: bytes) -> str:
    return " ".join(body.decode("utf-8", errors="replace").split())
