"""``relay rules check``, ``relay rules test`` and ``relay rules diff``.

The rules machinery (Jinja, YAML, the schema, the dry run) is imported by the functions
that use it: it is start-up time that `relay --help` and the other commands need not pay.
"""

from __future__ import annotations

import json
import sys
from typing import IO, TYPE_CHECKING, Any

import click

from relay.cli.common import audit_actor, load_rules_or_exit, settings_or_exit
from relay.errors import CasesError, IngestError
from relay.ops import audit
from relay.parsing import decode
from relay.settings import Settings

if TYPE_CHECKING:
    from relay.rules import Ruleset
    from relay.rules.cases import CaseResult


@click.group()
def rules() -> None:
    """Check and try rules files."""


@rules.command("check")
@click.argument("path", required=False)
@click.option("--strict", is_flag=True, help="exit 1 when there are warnings")
def rules_check(path: str | None, strict: bool) -> None:
    """Validate a rules file: a summary and exit 0, or every error and exit 1.

    Warnings (routes that never match, unused destinations, codes and statuses Webex
    Connect never sends) follow the summary on stderr; with --strict they exit 1.
    """
    from relay.rules import describe  # start-up cost: see the module docstring

    settings = settings_or_exit()
    path = path or settings.rules_path
    ruleset = load_rules_or_exit(settings, path, exit_code=1)
    click.echo(describe(ruleset))
    warnings = _warnings(ruleset, path)
    for line in warnings:
        click.echo(line, err=True)
    if strict and warnings:
        sys.exit(1)


def _warnings(ruleset: Ruleset, path: str) -> list[str]:
    from relay.rules.lint import lines_of, lint  # start-up cost: see the module docstring

    with open(path, encoding="utf-8") as file:
        line = lines_of(file.read())
    return [warning.format(ruleset.path) for warning in lint(ruleset, line)]


@rules.command("test")
@click.argument("path", required=False)
@click.option(
    "--event",
    "event_file",
    type=click.File("rb"),
    help="a raw Webex Connect payload (JSON file; - for stdin)",
)
@click.option(
    "--cases",
    "cases_path",
    type=click.Path(dir_okay=False),
    help="a YAML file of test cases: PASS/FAIL per case, exit 1 on any failure",
)
@click.option(
    "--source",
    default="default",
    show_default=True,
    help="the URL's <source> (--event only: cases give their own)",
)
@click.option("--explain", is_flag=True, help="show why each route matched or not")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def rules_test(
    path: str | None,
    event_file: IO[bytes] | None,
    cases_path: str | None,
    source: str,
    explain: bool,
    as_json: bool,
) -> None:
    """Dry run: which routes match the payload and what each destination would get.

    With --cases, run every case of the file against the rules instead.
    """
    if (event_file is None) == (cases_path is None):
        raise click.UsageError("give --event FILE or --cases FILE")
    settings = settings_or_exit()
    ruleset = load_rules_or_exit(settings, path or settings.rules_path, exit_code=1)
    if cases_path is not None:
        _run_cases(ruleset, cases_path, settings, explain, as_json)
    elif event_file is not None:
        _dry_run(ruleset, event_file, settings, source, explain, as_json)


@rules.command("diff")
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option(
    "--since", default="24h", show_default=True, help="the events of this window (e.g. 1h, 7d)"
)
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=10_000,
    show_default=True,
    help="at most this many events (the newest)",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--fail-on-change", is_flag=True, help="exit 1 when any event would change (CI)")
def rules_diff(candidate: str, since: str, limit: int, as_json: bool, fail_on_change: bool) -> None:
    """What CANDIDATE would change for real traffic: the stored events of the window,
    matched against the rules in force (RELAY_RULES) and against CANDIDATE, grouped by
    change. Sends nothing. CANDIDATE is read as the admin API reads one, without the
    environment (${VAR} is <VAR>, ${VAR:-default} its default) and within the same caps,
    but with no time budget. A CANDIDATE that does not load: its errors and exit 2.
    """
    from relay.ops.rules_diff import diff_rules  # start-up cost: see the module docstring
    from relay.state import RedisError, open_store
    from relay.times import parse_duration

    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    settings = settings_or_exit(require_redis=True)
    current = load_rules_or_exit(settings, settings.rules_path)
    proposed = _candidate_or_exit(settings, candidate)
    try:
        store = open_store(settings, timeout=5.0)
        result = diff_rules(store, current, proposed, window, limit)
    except RedisError as exc:
        click.echo(f"relay: redis: {exc}", err=True)
        sys.exit(1)
    audit.diffed(audit_actor(), result)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(
            f"{result.examined} event(s) of the last {since} examined"
            f"{'' if result.complete else f' (the newest {limit}: --limit stopped the walk)'};"
            f" rules {result.current_version} → {candidate} ({result.candidate_version}):"
            f" {result.changed} would change"
        )
        for change in result.changes:
            click.echo(f"  {change.label}")
            click.echo(f"    e.g. {', '.join(change.event_ids[:3])}")
    if fail_on_change and result.changed:
        sys.exit(1)


def _candidate_or_exit(settings: Settings, path: str) -> Ruleset:
    """The candidate at ``path`` (:func:`relay.ops.rules_diff.load_candidate`), or every
    error on stderr and exit 2."""
    from relay.errors import RulesError
    from relay.ops.rules_diff import load_candidate  # start-up cost: see the module docstring
    from relay.rules.document import read_source

    try:
        return load_candidate(read_source(path, RulesError), settings, label=path)
    except RulesError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        click.echo(f"{path}: {len(exc.errors)} error(s)", err=True)
    sys.exit(2)


def _dry_run(
    ruleset: Ruleset,
    event_file: IO[bytes],
    settings: Settings,
    source: str,
    explain: bool,
    as_json: bool,
) -> None:
    from relay.ops.dryrun import dry_run, format_text  # start-up cost: see the module docstring

    try:
        reports = dry_run(ruleset, decode(event_file.read()), settings, source, explain)
    except IngestError as exc:
        click.echo(f"{event_file.name}: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(reports, indent=2, ensure_ascii=False))
    else:
        click.echo(format_text(reports))


def _run_cases(
    ruleset: Ruleset, cases_path: str, settings: Settings, explain: bool, as_json: bool
) -> None:
    from relay.rules.cases import load_cases, run_cases, summary  # start-up cost
    from relay.rules.replies import OptWords

    try:
        cases = load_cases(cases_path)
    except CasesError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        click.echo(f"{cases_path}: {len(exc.errors)} error(s)", err=True)
        sys.exit(1)
    results = run_cases(ruleset, cases, OptWords.of(settings))
    if as_json:
        click.echo(json.dumps([_case_dict(ruleset, r, explain) for r in results], indent=2))
    else:
        for result in results:
            click.echo(str(result))
            if explain and not result.passed:
                click.echo("\n".join(_case_explanation(ruleset, result)))
        click.echo(summary(results))
    sys.exit(0 if all(result.passed for result in results) else 1)


def _case_dict(ruleset: Ruleset, result: CaseResult, explain: bool) -> dict[str, Any]:
    from relay.rules.explain import explain as explain_routes  # start-up cost: see above

    out = result.to_dict()
    if explain:
        out["explain"] = [
            [item.to_dict() for item in explain_routes(ruleset, event)] for event in result.events
        ]
    return out


def _case_explanation(ruleset: Ruleset, result: CaseResult) -> list[str]:
    """For a failed case: every route and why it matched or not, per event."""
    from relay.rules.explain import explain as explain_routes  # start-up cost: see above

    lines, several = [], len(result.events) > 1
    for n, event in enumerate(result.events):
        if several:
            lines.append(f"      event [{n}]:")
        indent = " " * (8 if several else 6)
        lines += [f"{indent}{item}" for item in explain_routes(ruleset, event)]
    return lines
