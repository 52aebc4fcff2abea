"""Operator tools shared by the admin API and the command line: dead letters, event
history views, rules dry runs, loading the rules with the settings checks, and the
Celery configuration every process publishes with."""

from __future__ import annotations

from typing import Any, Protocol


class Publisher(Protocol):
    """What a tool that sends work to the workers publishes with: anything with Celery's
    ``send_task`` (the web process's or a command's Celery app, ``relay.ops.broker``)."""

    def send_task(self, name: str, args: list[Any]) -> object: ...
