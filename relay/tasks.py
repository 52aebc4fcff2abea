"""Celery tasks: thin adapters over the store, the rules and the actions."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="relay.route", bind=True)
def route(self, event: dict) -> None:
    """Record the event's arrival in its history (routing comes with the rules engine)."""
    self.app.store.record_event(event, {"step": "received", "source": event.get("source")})
