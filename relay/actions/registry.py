"""The destination types relay can deliver to, and one attempt at one destination.

Each type's module (:mod:`relay.actions.http`, ``log``, ``email``, ``slack``, ``sms``)
provides three functions, gathered here into an :class:`ActionType`:

- ``prepare(destination, job, settings) -> dict``: render the templates into what will be
  sent (pure; TemplateError or ValueError on failure). ``relay rules test`` shows this,
  with secrets masked by :func:`redact`;
- ``send(destination, prepared, job, settings) -> Outcome``: send it once;
- ``check(destination, settings) -> list[str]``: what the settings lack for this
  destination (e.g. an SMTP URL), reported when the rules load.

Secrets (service key, Slack token, signing secrets, SMTP password, an OAuth2 client secret
and its tokens, a TLS key) are never in the prepared dict: ``send`` takes them from the
destination or the settings.

Adding a destination type touches: its model in :mod:`relay.rules.model` and its keys in
:mod:`relay.rules.schema` (the file format), its module here in ``relay/actions/`` with
the three functions, and one line in :data:`ACTION_TYPES`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from relay.actions import email, http, log, slack, sms
from relay.actions.base import Outcome
from relay.events import Job
from relay.rules import (
    Destination,
    EmailDestination,
    HttpDestination,
    LogDestination,
    SlackDestination,
    SmsReplyDestination,
)
from relay.rules.masking import MASK, hidden, hide_all, is_secret_key
from relay.settings import Settings


@dataclass(frozen=True)
class ActionType:
    """How to deliver to one destination type: its rules ``model`` and three functions."""

    model: type[Destination]
    prepare: Callable[[Any, Job, Settings], dict[str, Any]]
    send: Callable[[Any, dict[str, Any], Job, Settings], Outcome]
    check: Callable[[Any, Settings], list[str]]


#: destination type name (``http``, ``sms_reply`` …) → how to deliver to it
ACTION_TYPES: Mapping[str, ActionType] = MappingProxyType(
    {
        action.model.type: action
        for action in (
            ActionType(HttpDestination, http.prepare, http.send, http.check),
            ActionType(LogDestination, log.prepare, log.send, log.check),
            ActionType(EmailDestination, email.prepare, email.send, email.check),
            ActionType(SlackDestination, slack.prepare, slack.send, slack.check),
            ActionType(SmsReplyDestination, sms.prepare, sms.send, sms.check),
        )
    }
)


def action_type(destination: Destination) -> ActionType:
    """The :class:`ActionType` of ``destination``; ValueError for a type relay cannot send."""
    action = ACTION_TYPES.get(destination.type)
    if action is None or not isinstance(destination, action.model):
        raise ValueError(f"destination type {destination.type!r} is not supported")
    return action


def prepare(destination: Destination, job: Job, settings: Settings) -> dict[str, Any]:
    """What one attempt would send (see the module docstring); nothing is sent."""
    return action_type(destination).prepare(destination, job, settings)


def send(
    destination: Destination, prepared: dict[str, Any], job: Job, settings: Settings
) -> Outcome:
    """Send ``prepared`` (from :func:`prepare`) once; never raises for a delivery failure."""
    return action_type(destination).send(destination, prepared, job, settings)


def checks(destination: Destination, settings: Settings) -> list[str]:
    """What ``settings`` lack for ``destination`` to work (empty when nothing)."""
    return action_type(destination).check(destination, settings)


def redact(prepared: dict[str, Any], secrets: Collection[str] = ()) -> dict[str, Any]:
    """``prepared`` fit to show: the values of headers, and of keys in a JSON body or a
    Slack payload, whose names name a secret (:func:`relay.rules.masking.is_secret_key`:
    ``Authorization``, ``X-Api-Key``, ``X-Custom-Auth``, ``password`` …) and webhook
    URLs' paths masked; in every URL the password and the query values; and everywhere
    (URLs included) every value that came from the environment (``secrets``)."""
    shown = dict(prepared)
    if "headers" in shown:
        shown["headers"] = _keys_masked(shown["headers"])
    if isinstance(shown.get("body"), str):
        shown["body"] = _json_masked(shown["body"])
    if isinstance(shown.get("payload"), dict):
        shown["payload"] = _keys_masked(shown["payload"])
    if "webhook_url" in shown:
        shown["webhook_url"] = _mask_url_path(shown["webhook_url"])
    for key in ("url", "api"):
        if isinstance(shown.get(key), str):
            shown[key] = _mask_url_secrets(shown[key])
    return dict(hide_all(shown, hidden(secrets)))


def _json_masked(body: str) -> str:
    """A JSON body with the values under secret keys masked; any other text as it is."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    masked = _keys_masked(data)
    return body if masked == data else json.dumps(masked, ensure_ascii=False)


def _keys_masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: MASK if is_secret_key(str(key)) else _keys_masked(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_keys_masked(item) for item in value]
    return value


def _mask_url_secrets(url: str) -> str:
    """``https://u:pw@host/p?api_key=k&x=1`` → ``https://u:****@host/p?api_key=****&x=****``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = (
        "&".join(
            f"{pair.split('=', 1)[0]}={MASK}" if "=" in pair else pair
            for pair in parts.query.split("&")
        )
        if parts.query
        else ""
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_url_path(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/xyz`` → ``https://hooks.slack.com/****``."""
    match = re.match(r"^(\w+://[^/]+/)", url)
    return (match.group(1) if match else "") + MASK
