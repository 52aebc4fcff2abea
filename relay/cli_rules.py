"""``relay rules check`` and ``relay rules test``."""

from __future__ import annotations

import json
import sys

import click

from relay.cli_common import load_rules_or_exit, settings_or_exit
from relay.errors import IngestError


@click.group()
def rules() -> None:
    """Check and try rules files."""


@rules.command("check")
@click.argument("path", required=False)
def rules_check(path: str | None) -> None:
    """Validate a rules file: a summary and exit 0, or every error and exit 1."""
    from relay.rules import describe

    settings = settings_or_exit()
    ruleset = load_rules_or_exit(settings, path or settings.rules_path, exit_code=1)
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

    settings = settings_or_exit()
    ruleset = load_rules_or_exit(settings, path or settings.rules_path, exit_code=1)
    try:
        reports = dry_run(ruleset, decode(event_file.read()), settings, source)
    except IngestError as exc:
        click.echo(f"{event_file.name}: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(reports, indent=2, ensure_ascii=False))
    else:
        click.echo(format_text(reports))
