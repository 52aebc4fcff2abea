"""The rules page: the file in force (secrets masked), the playground, the diff.

The playground is ``relay rules test --explain`` on a pasted payload
(:func:`relay.ops.dryrun.dry_run`); the diff is ``relay rules diff`` of a pasted candidate
against stored traffic (:mod:`relay.ops.rules_diff`): read without the environment, within
the candidate's limits, matching events for :data:`~relay.ops.rules_diff.WEB_BUDGET` seconds
at most. Both send nothing and change nothing, so a viewer may use them too, though a
viewer's diff examines :data:`VIEWER_LIMIT` events at most.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import g, render_template, request
from flask.typing import ResponseReturnValue

from relay import parsing
from relay.errors import IngestError, RulesError
from relay.ops import audit
from relay.ops import rules_diff as diffs
from relay.ops.dryrun import dry_run, format_text
from relay.ops.rules_diff import CANDIDATE, DEFAULT_LIMIT, MAX_LIMIT, diff_rules, load_candidate
from relay.rules import Ruleset
from relay.samples import SAMPLE_INBOUND, SAMPLE_RECEIPT
from relay.times import parse_duration
from relay.web import logins
from relay.web.console.blueprint import bp
from relay.web.console.rules_text import redacted
from relay.web.context import current_relay

SAMPLES = {"receipt": SAMPLE_RECEIPT, "inbound": SAMPLE_INBOUND}
VIEWER_LIMIT = 1_000  #: events a viewer's diff examines at most (an admin's: MAX_LIMIT)


@bp.get("/rules")
def rules() -> ResponseReturnValue:
    return _page(payload=_sample(request.args.get("sample", "")))


@bp.post("/rules/playground")
def rules_playground() -> ResponseReturnValue:
    """A pasted payload → which routes match, why (or why not), and what would be sent."""
    payload = request.form.get("payload", "")
    source = request.form.get("source", "") or "default"
    relay = current_relay()
    try:
        parsing.check_source(source)
        document = parsing.decode(payload.encode("utf-8", "surrogatepass"))
        reports = dry_run(relay.rules, document, relay.settings, source, explain=True)
    except IngestError as exc:
        return _page(payload=payload, source=source, playground_error=str(exc)), 400
    return _page(payload=payload, source=source, explained=format_text(reports))


@bp.post("/rules/diff")
def rules_diff() -> ResponseReturnValue:
    """A pasted candidate rules file against the events of a window: what would change."""
    # a browser sends a textarea's lines ending in CRLF: the file as it would be saved
    candidate_text = request.form.get("candidate", "").replace("\r\n", "\n")
    since_text = request.form.get("since", "").strip() or "24h"
    most = _most_events()
    limit_text = request.form.get("limit", "").strip() or str(min(DEFAULT_LIMIT, most))
    values = {"candidate": candidate_text, "since": since_text, "limit": limit_text}
    relay = current_relay()
    try:
        since = parse_duration(since_text)
        limit = int(limit_text)
    except ValueError as exc:
        return _page(diff_form=values, diff_errors=[f"since or limit: {exc}"]), 400
    if not 1 <= limit <= most:
        return _page(diff_form=values, diff_errors=[f"limit: between 1 and {most:,}"]), 400
    candidate = _candidate(candidate_text)
    if isinstance(candidate, list):
        return _page(diff_form=values, diff_errors=candidate), 400
    budget = diffs.WEB_BUDGET  # looked up here: a test may shorten it
    result = diff_rules(relay.store, relay.rules, candidate, since, limit, budget=budget)
    audit.diffed(logins.actor(), result)
    return _page(diff_form=values, diff=result)


def _most_events() -> int:
    """The most events this session's diff may examine: fewer for a viewer."""
    return MAX_LIMIT if g.console_session.admin else VIEWER_LIMIT


def _candidate(text: str) -> Ruleset | list[str]:
    """The pasted rules (read without the environment:
    :func:`relay.ops.rules_diff.load_candidate`), or every problem with them."""
    if not text.strip():
        return [f"{CANDIDATE}: empty: paste a rules file"]
    try:
        return load_candidate(text, current_relay().settings)
    except RulesError as exc:
        return exc.errors


def _page(**values: Any) -> str:
    relay = current_relay()
    ruleset = relay.rules
    text, on_disk = _file_text(ruleset.path)
    return render_template(
        "console/rules.html",
        ruleset=ruleset,
        failure=getattr(relay.rules_holder, "failure", None),
        readable=text is not None,
        text=redacted(text, ruleset.interpolated) if text is not None else None,
        on_disk=on_disk,
        samples=SAMPLES,
        **{
            "source": "default",
            "payload": _sample("receipt"),
            "diff_form": {"since": "24h", "limit": min(DEFAULT_LIMIT, _most_events())},
            **values,
        },
    )


def _sample(name: str) -> str:
    sample = SAMPLES.get(name, SAMPLE_RECEIPT)
    return json.dumps(sample, indent=2, ensure_ascii=False)


def _file_text(path: str) -> tuple[str | None, str | None]:
    """The rules file's text and its version (as the loader computes it), or None, None
    when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None, None
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
