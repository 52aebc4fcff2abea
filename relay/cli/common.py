"""Helpers shared by the ``relay`` subcommands."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import TYPE_CHECKING

import click

from relay.cli.embedded import running_embedded_url
from relay.cli.running_up import running_rules
from relay.errors import ConfigError, RulesError
from relay.settings import Settings, load_settings
from relay.state import check_service

if TYPE_CHECKING:
    from relay.rules import Ruleset


def settings_or_exit(require_redis: bool = False) -> Settings:
    """Settings, or one line naming the bad variable and exit status 2.

    Without RELAY_REDIS_URL, a command that needs Redis uses the embedded one a running
    `relay up` serves from RELAY_DATA_DIR (so `relay dlq list` works beside `make run`).
    Sentinels that do not know the URL's service are a bad setting too. Without
    RELAY_RULES, the rules are those such a `relay up` runs (``relay.cli.running_up``).
    """
    try:
        settings = load_settings()
        recorded = None if "RELAY_RULES" in os.environ else running_rules(settings.data_dir)
        if recorded:  # the rules a `relay up` on this data dir runs
            settings = dataclasses.replace(settings, rules_path=recorded)
        if require_redis and not settings.redis_url:
            embedded = running_embedded_url(settings.data_dir)
            if embedded:
                settings = dataclasses.replace(settings, redis_url=embedded)
        if require_redis:
            check_service(settings.require_redis(), 5.0, settings.redis_sentinel_password)
        return settings
    except ConfigError as exc:
        click.echo(f"relay: {exc}", err=True)
        sys.exit(2)


def load_rules_or_exit(settings: Settings, path: str, exit_code: int = 2) -> Ruleset:
    """The ruleset at ``path``, or every error on stderr and ``exit_code``."""
    # imported here, as in relay.cli.rules: loading the rules machinery (Jinja, YAML, the
    # schema) is start-up time that `relay --help` and the dlq/events commands need not pay
    from relay.ops.checks import load_ruleset

    try:
        return load_ruleset(settings, path)
    except RulesError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        click.echo(f"{path}: {len(exc.errors)} error(s)", err=True)
    sys.exit(exit_code)
