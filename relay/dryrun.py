"""``relay rules test``: what a payload would do under a ruleset, with nothing sent."""

from __future__ import annotations

import json
from collections.abc import Set

from relay.delivery import delivery_id, http_body
from relay.ingest.parsing import build_events
from relay.rules import HttpDestination, LogDestination, Ruleset, TemplateError, render


def dry_run(
    ruleset: Ruleset, payload: object, own_numbers: Set[str] = frozenset(), source: str = "default"
) -> list[dict]:
    """For each notification in ``payload``: its event, matched routes, rendered deliveries."""
    events, _ = build_events(payload, source, own_numbers)
    return [_report(ruleset, event) for event in events]


def _report(ruleset: Ruleset, event: dict) -> dict:
    matches = ruleset.match(event)
    deliveries = [
        _delivery(ruleset, event, match.route, name, match.retry[name])
        for match in matches
        for name in match.destinations
    ]
    return {
        "event": event,
        "routes": [match.route for match in matches],
        "deliveries": deliveries,
    }


def _delivery(ruleset: Ruleset, event: dict, route: str, name: str, retry) -> dict:
    destination = ruleset.destinations[name]
    job = {
        "event": event,
        "route": route,
        "destination": name,
        "delivery_id": delivery_id(event["id"], name),
    }
    out = {
        "destination": name,
        "type": destination.type,
        "route": route,
        "retry": {"attempts": retry.attempts, "initial": retry.initial, "max": retry.max},
    }
    try:
        out["request"] = _rendered(destination, job)
    except TemplateError as exc:
        out["error"] = f"template error: {exc}"
    return out


def _rendered(destination, job: dict) -> dict:
    if isinstance(destination, HttpDestination):
        body, _ = http_body(destination, job)
        headers = {
            key: render(value, job["event"], job["route"], job["destination"])
            for key, value in destination.headers.items()
        }
        return {
            "method": destination.method,
            "url": destination.url,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
        }
    if isinstance(destination, LogDestination):
        return {"line": render(destination.text, job["event"], job["route"], job["destination"])}
    return {}


def format_text(reports: list[dict]) -> str:
    """The human form of ``dry_run``'s reports."""
    lines: list[str] = []
    for report in reports:
        event = report["event"]
        what = event.get("status") or event.get("keyword") or ""
        lines.append(f"event {event['kind']} {what}".rstrip())
        lines.append(f"  routes matched: {', '.join(report['routes']) or '(none: unrouted)'}")
        for item in report["deliveries"]:
            lines.append(f"  → {item['destination']} ({item['type']}, via {item['route']})")
            lines.extend(_indent(_request_lines(item), 6))
    return "\n".join(lines)


def _request_lines(item: dict) -> list[str]:
    if "error" in item:
        return [item["error"]]
    request = item.get("request", {})
    if "url" in request:
        head = [f"{request['method']} {request['url']}"]
        head += [f"{key}: {value}" for key, value in request["headers"].items()]
        return head + _body_lines(request["body"])
    return [f"{key}: {value}" for key, value in request.items()]


def _body_lines(body: str) -> list[str]:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False).splitlines()
    except ValueError:
        return body.splitlines()


def _indent(lines: list[str], width: int) -> list[str]:
    return [" " * width + line for line in lines]
