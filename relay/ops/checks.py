"""Loading the rules with the checks that depend on settings (DESIGN §5, §7).

An ``email`` destination needs ``RELAY_SMTP_URL``, an ``sms_reply`` needs
``RELAY_WEBEX_SERVICE_KEY``, and a Slack ``blocks`` template must render to a JSON list
of blocks (tried on a sample delivery receipt and a sample inbound message).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from relay.rules import (
    Destination,
    EmailDestination,
    Ruleset,
    SlackDestination,
    SmsReplyDestination,
    TemplateError,
    load_rules,
    render,
)
from relay.settings import Settings


def load_ruleset(settings: Settings, path: str | None = None) -> Ruleset:
    """The rules at ``path`` (default ``settings.rules_path``); RulesError lists problems."""
    return load_rules(path or settings.rules_path, checks=settings_checks(settings))


def settings_checks(settings: Settings):
    def check(name: str, destination: Destination) -> Iterable[str]:
        if isinstance(destination, EmailDestination) and not settings.smtp_url:
            yield "email destinations need RELAY_SMTP_URL (smtp://user:pass@host:port)"
        if isinstance(destination, SmsReplyDestination) and not settings.webex_service_key:
            yield "sms_reply destinations need RELAY_WEBEX_SERVICE_KEY"
        if isinstance(destination, SlackDestination) and destination.blocks is not None:
            yield from _blocks_problems(name, destination)

    return check


def _blocks_problems(name: str, destination: SlackDestination) -> Iterable[str]:
    from relay.samples import sample_events

    problems = []
    for event in sample_events():
        try:
            text = render(destination.blocks, event, "sample", name)
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
