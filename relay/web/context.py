"""What the views need, built once per web process by ``create_app``, and how they find it."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app
from flask.sansio.app import App

from relay.ops.broker import queue_sizes
from relay.rules import Ruleset
from relay.rules.reloader import RulesHolder
from relay.settings import Settings
from relay.state import Store

KEY = "relay"  #: the key of the app's :class:`Relay` in ``app.extensions``


@dataclass
class Relay:
    """The settings, the state store, the Celery client and the rules of one web process."""

    settings: Settings
    store: Store
    celery: Celery
    rules_holder: RulesHolder

    @property
    def rules(self) -> Ruleset:
        """The rules in force now (reloaded when the file changes)."""
        self.rules_holder.ensure_watching()
        return self.rules_holder.current

    def queue_sizes(self) -> list[tuple[str, int]]:
        """Messages waiting in the routing and the delivery queue (for the metrics scrape)."""
        return queue_sizes(self.celery)


def relay_of(app: App) -> Relay:
    """The :class:`Relay` that ``create_app`` gave ``app``."""
    relay: Relay = app.extensions[KEY]
    return relay


def current_relay() -> Relay:
    """The :class:`Relay` of the app handling the current request."""
    return relay_of(current_app)
