"""The ``relay`` command."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import sys
import time
import uuid
from typing import NoReturn

import click
import requests

from relay import __version__
from relay.cli.common import load_rules_or_exit, settings_or_exit
from relay.cli.embedded import EmbeddedRedis
from relay.cli.running_up import forget_rules, record_rules
from relay.cli.supervisor import Child, Supervisor
from relay.errors import ConfigError
from relay.samples import sample_curl
from relay.settings import Settings
from relay.state import RedisError, check_service, connect, eviction_warning
from relay.web import auth


def web_argv(host: str, port: int) -> list[str]:
    """The web process: gunicorn with relay's settings (as the Procfile runs it)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "relay.web.wsgi:app",
        "-c",
        "python:relay.web.gunicorn_conf",
        "--bind",
        f"{host}:{port}",
    ]


def worker_argv(*extra: str, loglevel: str = "INFO") -> list[str]:
    """The worker process: a Celery worker on relay's app (as the Procfile runs it), with
    a node name of its own (``relay-<pid>-<random>@<host>``), so any number of workers run
    on one host."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "relay.worker",
        "worker",
        "--loglevel",
        loglevel,
        "--hostname",
        f"relay-{os.getpid()}-{uuid.uuid4().hex[:6]}@%h",
        *extra,
    ]


@click.group()
@click.version_option(__version__, prog_name="relay")
def main() -> None:
    """relay: route Webex Connect SMS callbacks by YAML rules."""


@main.command()
@click.option(
    "--rules", "rules_path", help="rules file (default $RELAY_RULES or config/rules.yaml)"
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def up(rules_path: str | None, host: str, port: int) -> None:
    """All in one: embedded Redis (unless RELAY_REDIS_URL is set), web and a worker."""
    if rules_path:
        os.environ["RELAY_RULES"] = rules_path
    settings = settings_or_exit()
    embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir)
    try:
        if embedded and embedded.data_dir.is_dir():  # in use? the refusal comes first, alone
            embedded.lock()
    except ConfigError as exc:
        click.echo(f"relay: {exc}", err=True)
        sys.exit(2)
    settings = _allow_unauthenticated_on_loopback(settings, host)
    _check_callback_auth(settings)
    load_rules_or_exit(settings, settings.rules_path)
    os.environ["RELAY_RULES"] = os.path.abspath(settings.rules_path)
    _check_port_free(host, port)
    env = dict(os.environ)
    if settings.allow_unauthenticated:  # the web child must start, the worker load sms_reply
        env["RELAY_ALLOW_UNAUTHENTICATED"] = "1"
    try:
        if embedded:
            embedded.start()
            env["RELAY_REDIS_URL"] = embedded.url
            click.echo(f"relay: {embedded.summary}")
    except ConfigError as exc:
        click.echo(f"relay: {exc}", err=True)
        sys.exit(2)
    if settings.redis_url:  # not the embedded one, whose configuration is ours
        _check_redis(settings)
    # the data-dir lock proves no other worker uses the embedded Redis: the worker may
    # resume at start whatever the last run left in flight (relay.worker.recovery)
    worker_env = {**env, "RELAY_SOLE_WORKER": "1"} if embedded else env
    children = [
        Child("web", web_argv(host, port), env),
        Child(
            "worker",
            worker_argv("--without-gossip", "--without-mingle"),
            worker_env,
            stop_timeout=30.0,
        ),
    ]
    supervisor = Supervisor(children, services=[embedded] if embedded else [])
    supervisor.install_signal_handlers()
    status = 0
    try:
        if embedded:  # for the commands beside it, which find its Redis the same way
            record_rules(settings.data_dir, settings.rules_path)
        supervisor.start()
        base = f"http://{host}:{port}"
        if _wait_healthy(base + "/healthz", supervisor):
            url = f"{base}/webhooks/webex-connect"
            click.echo(
                f"\nrelay {__version__} is up.\n  webhook URL: {url}\n"
                f"  post a sample receipt:\n    {sample_curl(url)}\n"
                "  then, in another shell here: relay events show <id from the answer>,\n"
                "  relay dlq list, relay rules test --event FILE --explain\n"
                "  Ctrl-C stops everything.\n"
            )
        status = supervisor.watch()
    finally:
        click.echo("relay: stopping", err=True)
        supervisor.stop()
        forget_rules(settings.data_dir)
        if embedded:
            embedded.stop()
    sys.exit(status)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: only this machine can connect."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: not resolved, not assumed to be private


def _allow_unauthenticated_on_loopback(settings: Settings, host: str) -> Settings:
    """``relay up`` on a loopback address may run without callback authentication (with
    the warning): the setting is implied, and passed on to the children."""
    if settings.ingest_auth_configured or settings.require_auth or not is_loopback(host):
        return settings
    return dataclasses.replace(settings, allow_unauthenticated=True)


def _check_callback_auth(settings: Settings) -> None:
    """Exit 2 when no callback auth is set and that is not allowed (or RELAY_REQUIRE_AUTH
    forbids it); else warn once if there is none."""
    try:
        auth.IngestAuth.from_settings(settings)
    except ConfigError as exc:
        click.echo(f"relay: {exc}", err=True)
        sys.exit(2)
    message = auth.warning(settings)
    if message:
        click.echo(f"relay: {message}", err=True)


def _check_redis(settings: Settings) -> None:
    """Exit 2 when Sentinels do not know the configured service; warn when the Redis does
    not answer or may evict keys."""
    url = settings.require_redis()
    try:
        check_service(url, 5.0, settings.redis_sentinel_password)
        warning = eviction_warning(connect(url, 5.0, settings.redis_sentinel_password))
    except ConfigError as exc:
        click.echo(f"relay: {exc}", err=True)
        sys.exit(2)
    except RedisError as exc:
        click.echo(
            f"relay: warning: Redis at {url.split('@')[-1]} does not answer: {exc}", err=True
        )
        return
    if warning:
        click.echo(f"relay: warning: {warning}", err=True)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            click.echo(f"relay: cannot listen on {host}:{port}: {exc.strerror}", err=True)
            sys.exit(2)


def _wait_healthy(url: str, supervisor: Supervisor, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not supervisor.stopping:
        try:
            if requests.get(url, timeout=1).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option(
    "--port",
    default=lambda: int(os.environ.get("PORT", "8000")),
    type=int,
    help="default $PORT or 8000",
)
def web(host: str, port: int) -> None:
    """The web process: gunicorn serving the webhook endpoint."""
    _check_callback_auth(settings_or_exit(require_redis=True))
    argv = web_argv(host, port)
    os.execv(sys.executable, argv)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--check",
    is_flag=True,
    help="a liveness probe: exit 0 when a worker of this host beat in the last 15 s, else 1",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(check: bool, celery_args: tuple[str, ...]) -> None:
    """The worker process: a Celery worker for routing and delivery (extra args go to celery)."""
    settings = settings_or_exit(require_redis=True)
    if check:
        _check_worker(settings)
    argv = worker_argv(*celery_args)
    os.execv(sys.executable, argv)


def _check_worker(settings: Settings) -> NoReturn:
    """``relay worker --check``: one line, exit 0 when a worker of this host is alive."""
    from relay.ops.liveness import worker_liveness
    from relay.state import open_store

    try:
        found = worker_liveness(open_store(settings, timeout=5.0), socket.gethostname())
    except RedisError as exc:
        click.echo(f"relay: worker not known to be alive: redis: {exc}", err=True)
        sys.exit(1)
    click.echo(found.message, err=not found.alive)
    sys.exit(0 if found.alive else 1)


from relay.cli.destinations import destinations  # noqa: E402 - the subcommand groups, after main
from relay.cli.dlq import dlq  # noqa: E402
from relay.cli.events import events  # noqa: E402
from relay.cli.rules import rules  # noqa: E402

main.add_command(rules)
main.add_command(dlq)
main.add_command(events)
main.add_command(destinations)
