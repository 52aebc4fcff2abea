"""Loading the rules with the checks that depend on settings.

Each destination type says what it needs from the settings
(:func:`relay.actions.registry.checks`): an ``email`` destination needs
``RELAY_SMTP_URL``, an ``sms_reply`` needs ``RELAY_WEBEX_SERVICE_KEY`` and authenticated
callbacks (or ``RELAY_ALLOW_UNAUTHENTICATED=1``), and a Slack ``blocks`` template must render
to a JSON list of blocks (see config/README.md: Destinations). The commands and the worker
load rules this way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from relay import metrics
from relay.actions import registry
from relay.ops.destinations import record_in_force
from relay.rules import Destination, DestinationChecks, Ruleset, load_rules
from relay.rules.reloader import RulesHolder
from relay.settings import Settings
from relay.state import RedisError, Store

log = logging.getLogger("relay.rules")


def load_ruleset(settings: Settings, path: str | None = None) -> Ruleset:
    """The rules at ``path`` (default ``settings.rules_path``); RulesError lists problems."""
    return load_rules(path or settings.rules_path, checks=settings_checks(settings))


def settings_checks(settings: Settings) -> DestinationChecks:
    """The loader's per-destination check: what ``settings`` lack for each destination."""

    def check(name: str, destination: Destination) -> Iterable[str]:
        return registry.checks(destination, settings)

    return check


def rules_holder(settings: Settings, store: Store | None = None) -> RulesHolder:
    """A RulesHolder for ``settings.rules_path`` with the settings checks and metrics; with
    ``store``, the rules it loads are recorded in Redis as the rules in force (see
    :func:`relay.ops.destinations.record_in_force`)."""

    def changed(ruleset: Ruleset | None, ok: bool) -> None:
        metrics.rules_changed(ruleset, ok)
        if ruleset is not None and store is not None:
            try:
                record_in_force(store, ruleset)
            except RedisError as exc:  # recorded again at the next load; never fatal
                log.warning("could not record the rules in force in Redis: %s", exc)

    return RulesHolder(
        settings.rules_path, lambda path: load_ruleset(settings, path), on_change=changed
    )
