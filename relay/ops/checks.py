"""Loading the rules with the checks that depend on settings.

Each destination type says what it needs from the settings
(:func:`relay.actions.registry.checks`): an ``email`` destination needs
``RELAY_SMTP_URL``, an ``sms_reply`` needs ``RELAY_WEBEX_SERVICE_KEY`` and authenticated
callbacks (or ``RELAY_ALLOW_UNAUTHENTICATED=1``), and a Slack ``blocks`` template must render
to a JSON list of blocks (see config/README.md: Destinations). The commands and the worker
load rules this way.
"""

from __future__ import annotations

from collections.abc import Iterable

from relay import metrics
from relay.actions import registry
from relay.rules import Destination, DestinationChecks, Ruleset, load_rules
from relay.rules.reloader import RulesHolder
from relay.settings import Settings


def load_ruleset(settings: Settings, path: str | None = None) -> Ruleset:
    """The rules at ``path`` (default ``settings.rules_path``); RulesError lists problems."""
    return load_rules(path or settings.rules_path, checks=settings_checks(settings))


def settings_checks(settings: Settings) -> DestinationChecks:
    """The loader's per-destination check: what ``settings`` lack for each destination."""

    def check(name: str, destination: Destination) -> Iterable[str]:
        return registry.checks(destination, settings)

    return check


def rules_holder(settings: Settings) -> RulesHolder:
    """A RulesHolder for ``settings.rules_path`` with the settings checks and metrics."""
    return RulesHolder(
        settings.rules_path,
        lambda path: load_ruleset(settings, path),
        on_change=metrics.rules_changed,
    )
