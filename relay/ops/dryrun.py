"""``relay rules test``: what a payload would do under a ruleset, with nothing sent.

What a dry run shows never carries a value the rules took from the environment: requests
are redacted (:func:`relay.actions.registry.redact`), and every value read through
``${VAR}`` is hidden as ``****`` wherever else it appears — route names, explanations,
template errors — all but the event, which is the caller's own payload.

Opt-outs are decided as the worker decides them (:mod:`relay.rules.replies`), on a
simulated state that starts with nobody opted out and is neither read from Redis nor
written to it: a STOP shows ``sender_opted_out: true`` and opts its sender out for the
payload's later messages; ``please stop texting me`` shows ``opt_out_ambiguous: true``.
An ``sms_reply`` that the worker would skip says why (``skipped``); cooldowns are not
simulated.
"""

from __future__ import annotations

import json
from typing import Any

from relay.actions.registry import prepare, redact
from relay.errors import PayloadError
from relay.events import RECEIPT_OVERDUE, Event, Job, fallback_job, new_failure, new_id, new_job
from relay.parsing import build_events, overdue_from_payload
from relay.rules import (
    DEFAULT_RETRY,
    Destination,
    RetryPolicy,
    Ruleset,
    SmsReplyDestination,
    TemplateError,
)
from relay.rules.explain import RouteExplanation
from relay.rules.explain import explain as explain_routes
from relay.rules.masking import hidden, hide_all
from relay.rules.replies import OptOuts, OptWords, SimulatedOptOuts, apply_opt_keywords, skip_reason
from relay.settings import Settings


def dry_run(
    ruleset: Ruleset,
    payload: object,
    settings: Settings,
    source: str = "default",
    explain: bool = False,
) -> list[dict[str, Any]]:
    """For each notification in ``payload``: its event, matched routes, rendered deliveries.

    With ``explain``, each report also has ``explain``: every route, matched or why not
    (:func:`relay.rules.explain.explain`, as dicts). Nothing is sent and no state is read or
    written: opt-outs are simulated, from nobody opted out (see the module docstring).
    """
    events = _events(payload, source, settings)
    optouts, words = SimulatedOptOuts(), OptWords.of(settings)
    reports = [_report(ruleset, event, settings, optouts, words) for event in events]
    if explain:
        for report in reports:
            found = explain_routes(ruleset, report["event"])
            report["explain"] = [item.to_dict() for item in found]
    forms = hidden(ruleset.interpolated)
    return [{**report, **hide_all(_without_event(report), forms)} for report in reports]


def _events(payload: object, source: str, settings: Settings) -> list[Event]:
    """The events of a Webex Connect payload, or of a ``receipt_overdue`` payload (an
    object, or an array of them, with ``"kind": "receipt_overdue"``: the ``raw`` of the
    events relay makes for overdue messages)."""
    items = payload if isinstance(payload, list) else [payload]
    if not items or not all(_is_overdue(item) for item in items):
        return build_events(payload, source, settings.own_numbers)[0]
    prefix = isinstance(payload, list)
    return [
        overdue_from_payload(_checked(item, f"[{i}]." if prefix else ""), source, new_id())
        for i, item in enumerate(items)
    ]


def _is_overdue(item: object) -> bool:
    return isinstance(item, dict) and item.get("kind") == RECEIPT_OVERDUE


#: the fields of a receipt_overdue payload and their JSON types
_OVERDUE_FIELDS = {
    "transid": str,
    "destination": str,
    "last_status": str,
    "last_code": str,
    "first_received_at": str,
    "age_seconds": int,
    "callbackData": str,
    "correlationid": str,
}


def _checked(item: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``item`` when each field it has is of its type and ``transid`` is there, else a
    PayloadError naming the field."""
    for name in item:
        if name != "kind" and name not in _OVERDUE_FIELDS:
            fields = ", ".join(_OVERDUE_FIELDS)
            raise _bad(prefix + name, f"unknown field of a receipt_overdue payload ({fields})")
    for name, kind in _OVERDUE_FIELDS.items():
        value = item.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise _bad(prefix + name, "expected a whole number" if kind is int else "expected text")
    if not item.get("transid"):
        raise _bad(prefix + "transid", "missing")
    return item


def _bad(field: str, what: str) -> PayloadError:
    return PayloadError(f"{field}: {what}", field=field)


def _without_event(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key != "event"}


def _report(
    ruleset: Ruleset, event: Event, settings: Settings, optouts: OptOuts, words: OptWords
) -> dict[str, Any]:
    apply_opt_keywords(optouts, event, words)  # before matching, as the worker does
    matches = ruleset.match(event)
    deliveries = [
        _delivery(ruleset, event, match.route, name, match.retry[name], settings)
        for match in matches
        for name in match.destinations
    ]
    for item in deliveries:  # before the attempt, as the worker does
        reason = _skipped(ruleset.destinations[item["destination"]], event, settings, optouts)
        if reason is not None:
            item["skipped"] = reason
    return {
        "event": event,
        "routes": [match.route for match in matches],
        "deliveries": deliveries,
    }


def _skipped(
    destination: Destination, event: Event, settings: Settings, optouts: OptOuts
) -> str | None:
    """Why the worker would skip this delivery before its attempt (cooldowns aside)."""
    if not isinstance(destination, SmsReplyDestination):
        return None
    return skip_reason(destination, event, settings.own_numbers, optouts.opted_out)


def _delivery(
    ruleset: Ruleset,
    event: Event,
    route: str,
    name: str,
    retry: RetryPolicy,
    settings: Settings,
) -> dict[str, Any]:
    destination = ruleset.destinations[name]
    spec = retry.spec()
    job = new_job(event, route, name, ruleset.version, spec)
    out = {"destination": name, "type": destination.type, "route": route, "retry": spec}
    _render(ruleset, job, settings, out)
    if destination.fallback is not None and destination.fallback in ruleset.destinations:
        out["fallback"] = _fallback(ruleset, job, destination.fallback, settings)
    return out


#: what a dry run shows as ``failure.last_error``
SAMPLE_ERROR = "(the last error)"


def _fallback(ruleset: Ruleset, job: Job, name: str, settings: Settings) -> dict[str, Any]:
    """What the fallback would get if ``job`` were dead-lettered after its last attempt."""
    fallback = ruleset.destinations[name]
    spec = (fallback.retry or DEFAULT_RETRY).spec()
    attempts = job["retry"]["attempts"]
    failure = new_failure(job["destination"], job["delivery_id"], attempts, SAMPLE_ERROR)
    handed = fallback_job(job, name, spec, failure)
    out: dict[str, Any] = {
        "destination": name,
        "type": fallback.type,
        "failure": failure,
        "retry": spec,
    }
    _render(ruleset, handed, settings, out)
    return out


def _render(ruleset: Ruleset, job: Job, settings: Settings, out: dict[str, Any]) -> None:
    destination = ruleset.destinations[job["destination"]]
    try:
        out["request"] = redact(prepare(destination, job, settings), ruleset.interpolated)
    except (TemplateError, ValueError) as exc:
        out["error"] = f"template error: {exc}" if isinstance(exc, TemplateError) else str(exc)


def format_text(reports: list[dict[str, Any]]) -> str:
    """The human form of ``dry_run``'s reports."""
    lines: list[str] = []
    for report in reports:
        event = report["event"]
        what = event.get("status") or event.get("keyword") or ""
        lines.append(f"event {event['kind']} {what}".rstrip())
        lines.append(f"  routes matched: {', '.join(report['routes']) or '(none: unrouted)'}")
        if "explain" in report:
            explained = [str(RouteExplanation(**item)) for item in report["explain"]]
            lines += ["  explain:", *_indent(explained, 4)]
        for item in report["deliveries"]:
            lines.append(f"  → {item['destination']} ({item['type']}, via {item['route']})")
            if "skipped" in item:
                lines.append(f"      skipped by the worker: {item['skipped']}")
            lines.extend(_indent(_request_lines(item), 6))
            if "fallback" in item:
                fallback = item["fallback"]
                head = f"if dead-lettered → {fallback['destination']} ({fallback['type']}, fallback"
                lines.append(f"    {head}; failure.last_error shown as {SAMPLE_ERROR})")
                lines.extend(_indent(_request_lines(fallback), 8))
    return "\n".join(lines)


def _request_lines(item: dict[str, Any]) -> list[str]:
    if "error" in item:
        return [item["error"]]
    request = item.get("request", {})
    if "method" in request:  # http
        head = [f"{request['method']} {request['url']}"]
        head += [f"{key}: {value}" for key, value in request["headers"].items()]
        return head + [f"Content-Type: {request['content_type']}"] + _body_lines(request["body"])
    lines: list[str] = []
    for key, value in request.items():
        if isinstance(value, (dict, list)):
            lines.append(f"{key}:")
            lines.extend(_indent(json.dumps(value, indent=2, ensure_ascii=False).splitlines(), 2))
        elif value is not None:
            lines.append(f"{key}: {value}")
    return lines


def _body_lines(body: str) -> list[str]:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False).splitlines()
    except ValueError:
        return body.splitlines()


def _indent(lines: list[str], width: int) -> list[str]:
    return [" " * width + line for line in lines]
