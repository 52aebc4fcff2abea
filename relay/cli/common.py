"""Helpers shared by the ``relay`` subcommands: settings, the rules, Redis, failing."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import click
from kombu.exceptions import KombuError

from relay import logs
from relay.cli.embedded import running_embedded_url
from relay.cli.running_up import running_rules
from relay.errors import ConfigError, RulesError, UnavailableError
from relay.ops import audit
from relay.settings import Settings, load_settings
from relay.state import RedisError, Store, check_service, open_store

if TYPE_CHECKING:
    from relay.rules import Ruleset

#: seconds a Redis call of an operator command may take
REDIS_TIMEOUT = 5.0


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


def store(settings: Settings | None = None) -> Store:
    """The store of ``settings`` (else of the environment), its calls bounded by
    ``REDIS_TIMEOUT``."""
    settings = settings or settings_or_exit(require_redis=True)
    return open_store(settings, timeout=REDIS_TIMEOUT)


@contextmanager
def infrastructure() -> Iterator[None]:
    """Redis or the broker failing: one line and exit status 1, not a traceback."""
    try:
        yield
    except RedisError as exc:
        fail(f"redis: {exc}")
    except UnavailableError as exc:  # replicas did not confirm a write in time
        fail(str(exc))
    except (KombuError, OSError) as exc:
        fail(f"broker: {exc}")


def fail(message: str) -> NoReturn:
    """``relay: message`` on stderr and exit status 1."""
    click.echo(f"relay: {message}", err=True)
    sys.exit(1)


def audit_actor() -> audit.Actor:
    """Who runs this command, for the audit log, whose lines go to stderr in relay's log
    format: a command configures no logging of its own."""
    logger = logging.getLogger(audit.log.name)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logs.formatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return audit.Actor.cli()
