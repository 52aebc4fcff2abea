"""The ``relay`` command."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import click
import requests

from relay import __version__
from relay.errors import ConfigError, IngestError, RulesError
from relay.settings import Settings, load_settings


def _settings(require_redis: bool = False) -> Settings:
    """Settings, or one line naming the bad variable and exit status 2."""
    try:
        settings = load_settings()
        if require_redis:
            settings.require_redis()
        return settings
    except ConfigError as exc:
        click.echo(f"relay: {exc}", err=True)
        sys.exit(2)


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
    from relay.embedded import EmbeddedRedis
    from relay.samples import sample_curl
    from relay.supervisor import Child, Supervisor, _die_with_parent

    if rules_path:
        os.environ["RELAY_RULES"] = rules_path
    settings = _settings()
    _load_rules_or_exit(settings, settings.rules_path)
    os.environ["RELAY_RULES"] = os.path.abspath(settings.rules_path)
    _check_port_free(host, port)
    embedded = None
    env = dict(os.environ)
    try:
        if not settings.redis_url:
            embedded = EmbeddedRedis(settings.data_dir).start(preexec_fn=_die_with_parent)
            env["RELAY_REDIS_URL"] = embedded.url
            click.echo(f"relay: embedded Redis {embedded.url} (data in {embedded.data_dir})")
    except ConfigError as exc:
        click.echo(f"relay: {exc}", err=True)
        sys.exit(2)
    python = sys.executable
    children = [
        Child(
            "web",
            [
                python,
                "-m",
                "gunicorn",
                "relay.wsgi:app",
                "-c",
                "python:relay.gunicorn_conf",
                "--bind",
                f"{host}:{port}",
            ],
            env,
        ),
        Child(
            "worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "relay.worker",
                "worker",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            env,
            stop_timeout=30.0,
        ),
    ]
    supervisor = Supervisor(children)
    supervisor.install_signal_handlers()
    status = 0
    try:
        supervisor.start()
        base = f"http://{host}:{port}"
        if _wait_healthy(base + "/healthz", supervisor):
            url = f"{base}/webhooks/webex-connect"
            click.echo(
                f"\nrelay {__version__} is up.\n  webhook URL: {url}\n"
                f"  post a sample receipt:\n    {sample_curl(url)}\n"
                "  Ctrl-C stops everything.\n"
            )
        status = supervisor.watch()
    finally:
        click.echo("relay: stopping", err=True)
        supervisor.stop()
        if embedded:
            embedded.stop()
    sys.exit(status)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            click.echo(f"relay: cannot listen on {host}:{port}: {exc.strerror}", err=True)
            sys.exit(2)


def _wait_healthy(url: str, supervisor, timeout: float = 30.0) -> bool:
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
    _settings(require_redis=True)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "relay.wsgi:app",
        "-c",
        "python:relay.gunicorn_conf",
        "--bind",
        f"{host}:{port}",
    ]
    os.execv(sys.executable, argv)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """The worker process: a Celery worker for routing and delivery (extra args go to celery)."""
    _settings(require_redis=True)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "relay.worker",
        "worker",
        "--loglevel",
        "INFO",
        *celery_args,
    ]
    os.execv(sys.executable, argv)


def _load_rules_or_exit(settings: Settings, path: str, exit_code: int = 2):
    """The ruleset at ``path``, or every error on stderr and ``exit_code``."""
    from relay.checks import load_ruleset

    try:
        return load_ruleset(settings, path)
    except RulesError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        click.echo(f"{path}: {len(exc.errors)} error(s)", err=True)
    sys.exit(exit_code)


@main.group()
def rules() -> None:
    """Check and try rules files."""


@rules.command("check")
@click.argument("path", required=False)
def rules_check(path: str | None) -> None:
    """Validate a rules file: a summary and exit 0, or every error and exit 1."""
    from relay.rules import describe

    settings = _settings()
    ruleset = _load_rules_or_exit(settings, path or settings.rules_path, exit_code=1)
    click.echo(describe(ruleset))


@rules.command("test")
@click.argument("path", required=False)
@click.option(
    "--event",
    "event_file",
    required=True,
    type=click.File("rb"),
    help="a raw Webex Connect payload (JSON file; - for stdin)",
)
@click.option("--source", default="default", show_default=True, help="the URL's <source>")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def rules_test(path: str | None, event_file, source: str, as_json: bool) -> None:
    """Dry run: which routes match the payload and what each destination would get."""
    from relay.dryrun import dry_run, format_text
    from relay.ingest.parsing import decode

    settings = _settings()
    ruleset = _load_rules_or_exit(settings, path or settings.rules_path, exit_code=1)
    try:
        reports = dry_run(ruleset, decode(event_file.read()), settings, source)
    except IngestError as exc:
        click.echo(f"{event_file.name}: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(reports, indent=2, ensure_ascii=False))
    else:
        click.echo(format_text(reports))


if __name__ == "__main__":
    main()
