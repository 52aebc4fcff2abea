"""The admin API under ``/api/``: dead letters, destinations, event search and history,
re-routes, rules dry runs and diffs.

Every ``/api/`` path needs ``Authorization: Bearer $RELAY_ADMIN_TOKEN`` (401 otherwise),
or for ``GET`` the read-only ``RELAY_VIEWER_TOKEN``, which is shown phone numbers masked;
with the admin token unset every path answers 404, as if the API did not exist. Wrong
tokens are logged and throttled per client address (:mod:`relay.web.logins`). Answers
are JSON, the same shapes as ``relay dlq … --json`` and ``relay events show --json``
(see ``relay.ops``). Bad input is a 400 naming the field; unknown ids a 404; Redis or
the broker not answering a 503.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from relay import parsing
from relay.errors import (
    ForbiddenError,
    NotFoundError,
    RelayError,
    RequestError,
    RulesError,
    TooManyLoginsError,
    UnauthorizedError,
)
from relay.logs import mask_data
from relay.ops import (
    audit,
    dead_letters,
    destinations,
    history,
    lifecycle,
    reroute,
    rules_diff,
    search,
)
from relay.ops.dead_letter_pages import DeadLetterFilter, page_dead_letters
from relay.ops.dryrun import dry_run
from relay.times import parse_duration
from relay.web import logins
from relay.web.context import current_relay

bp = Blueprint("api", __name__, url_prefix="/api")

DEFAULT_LIST_LIMIT = 1000  #: dead letters in one list answer
MAX_LIST_LIMIT = 10000  #: largest ``limit`` accepted
MAX_REPLAY_IDS = 1000  #: ids in one replay request


@bp.before_app_request
def _authorize() -> ResponseReturnValue | None:
    """Runs for every request, so that unknown /api/ paths and methods are guarded too."""
    if request.path != "/api" and not request.path.startswith("/api/"):
        return None
    settings = current_relay().settings
    token = settings.admin_token
    if not token:
        raise NotFound()
    wait = logins.cooling_off("api")
    if wait:
        raise TooManyLoginsError(wait)
    header = request.headers.get("Authorization")
    admin = _bearer_matches(header or "", token)
    # both compared every time: the timing does not tell which token nearly matched
    viewer = settings.viewer_token is not None and _bearer_matches(
        header or "", settings.viewer_token
    )
    if not (admin or viewer):
        if header is not None:  # credentials, and wrong: a failed login (no header: none)
            logins.failed("api")
        raise UnauthorizedError(headers={"WWW-Authenticate": "Bearer"})
    g.api_role = "admin" if admin else "viewer"
    logins.succeeded("api", g.api_role)
    if admin:
        return None
    if request.method not in ("GET", "HEAD"):
        raise ForbiddenError(
            "RELAY_VIEWER_TOKEN is read-only: GET only; this needs RELAY_ADMIN_TOKEN"
        )
    return None


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    # bytes: compare_digest refuses non-ASCII str; surrogatepass: env values may hold some
    return hmac.compare_digest(
        given.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )


def _for_caller(value: Any) -> Any:
    """What the caller may see of events: a viewer gets every phone number masked, as the
    console shows them (unless RELAY_LOG_PII=1); an admin gets them whole."""
    if g.get("api_role") == "viewer" and not current_relay().settings.log_pii:
        return mask_data(value)
    return value


# -- dead letters ---------------------------------------------------------------------------


@bp.get("/dead-letters")
def list_dead_letters() -> ResponseReturnValue:
    """Dead letters oldest first, a page at a time (``next_cursor`` → ``cursor``)."""
    params = _query("destination", "limit", "cursor")
    limit = _integer(params.get("limit"), "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)
    which = DeadLetterFilter(destination=params.get("destination") or None)
    page = page_dead_letters(current_relay().store, which, params.get("cursor") or None, limit)
    return jsonify(page.to_dict())


@bp.get("/dead-letters/<path:delivery_id>")
def show_dead_letter(delivery_id: str) -> ResponseReturnValue:
    _query()
    record = dead_letters.show_dead_letter(current_relay().store, delivery_id)
    if record is None:
        raise NotFoundError(f"no dead letter {delivery_id!r}")
    return jsonify(_for_caller(record))


@bp.delete("/dead-letters/<path:delivery_id>")
def delete_dead_letter(delivery_id: str) -> ResponseReturnValue:
    _query()
    relay = current_relay()
    if not dead_letters.delete_dead_letter(relay.store, delivery_id, relay.celery):
        raise NotFoundError(f"no dead letter {delivery_id!r}")
    audit.deleted(logins.actor(), [delivery_id])
    return jsonify(deleted=[delivery_id])


@bp.delete("/dead-letters")
def purge_dead_letters() -> ResponseReturnValue:
    # unknown parameters are refused: a misspelt older_than must not purge everything
    params = _query("older_than")
    older_than = None
    if "older_than" in params:
        try:
            older_than = parse_duration(params["older_than"])
        except ValueError as exc:
            raise RequestError(str(exc), "older_than") from None
    relay = current_relay()
    purged = dead_letters.purge(relay.store, older_than, publisher=relay.celery)
    audit.purged(logins.actor(), purged, older_than)
    return jsonify(purged=purged)


@bp.post("/dead-letters/<path:delivery_id>/replay")
def replay_dead_letter(delivery_id: str) -> ResponseReturnValue:
    _query()
    relay = current_relay()
    report = dead_letters.replay(relay.store, relay.celery, [delivery_id], relay.rules.destinations)
    if report.not_found:
        raise NotFoundError(f"no dead letter {delivery_id!r}")
    audit.replayed(logins.actor(), report)
    return jsonify(report.to_dict()), 202


@bp.post("/dead-letters/replay")
def replay_dead_letters() -> ResponseReturnValue:
    """Body ``{"ids": [...]}`` or ``{"all": true, "destination": "crm"}`` (destination optional)."""
    _query()
    body = _request_object()
    unknown = sorted(set(body) - {"ids", "all", "destination"})
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}", unknown[0])
    relay = current_relay()
    known = relay.rules.destinations
    if body.get("all") is not None or "destination" in body:
        _check_all(body)
        report = dead_letters.replay_all(relay.store, relay.celery, body.get("destination"), known)
    else:
        report = dead_letters.replay(relay.store, relay.celery, _ids(body), known)
    audit.replayed(logins.actor(), report)
    return jsonify(report.to_dict()), 202


def _check_all(body: dict[str, Any]) -> None:
    if "all" not in body:
        raise RequestError('only with "all": true', "destination")
    if body["all"] is not True:
        raise RequestError("must be true (or give ids instead)", "all")
    if "ids" in body:
        raise RequestError("give either ids or all, not both", "ids")
    destination = body.get("destination")
    if destination is not None and (not isinstance(destination, str) or not destination):
        raise RequestError("must be a destination name", "destination")


def _ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids:
        raise RequestError('a non-empty list of dead-letter ids (or "all": true)', "ids")
    if len(ids) > MAX_REPLAY_IDS:
        raise RequestError(f"more than {MAX_REPLAY_IDS} ids", "ids")
    for index, item in enumerate(ids):
        if not isinstance(item, str) or not item:
            raise RequestError("must be a dead-letter id (a string)", f"ids[{index}]")
    return ids


# -- destinations ---------------------------------------------------------------------------


@bp.get("/destinations")
def list_destinations() -> ResponseReturnValue:
    _query()
    relay = current_relay()
    items = destinations.list_destinations(relay.store, relay.rules.destinations)
    return jsonify(destinations=_for_caller([item.to_dict() for item in items]))


@bp.post("/destinations/<path:name>/pause")
def pause_destination(name: str) -> ResponseReturnValue:
    """Body (optional) ``{"for": "1h"}``: resume by itself after that long."""
    _query()
    seconds = _pause_for(_request_object() if request.content_length else {})
    relay = current_relay()
    try:
        item = destinations.pause(relay.store, relay.rules.destinations, name, seconds)
    except ValueError as exc:
        raise RequestError(str(exc), "for") from None
    audit.paused(logins.actor(), name, seconds)
    return jsonify(item.to_dict())


@bp.post("/destinations/<path:name>/resume")
def resume_destination(name: str) -> ResponseReturnValue:
    _query()
    relay = current_relay()
    report = destinations.resume(relay.store, relay.celery, relay.rules.destinations, name)
    audit.resumed(logins.actor(), name, report)
    return jsonify(report.to_dict())


def _pause_for(body: dict[str, Any]) -> float | None:
    unknown = sorted(set(body) - {"for"})
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}", unknown[0])
    if body.get("for") is None:
        return None
    try:
        seconds = parse_duration(body["for"])
    except (ValueError, TypeError) as exc:
        raise RequestError(str(exc), "for") from None
    if seconds <= 0:
        raise RequestError("must be longer than 0", "for")
    return seconds


# -- history and rules ----------------------------------------------------------------------


@bp.get("/events")
def search_events() -> ResponseReturnValue:
    """Events newest first, filtered (every filter given must hold), a page at a time."""
    params = _query(*search.FILTERS, "since", "until", "cursor", "limit")
    relay = current_relay()
    query = search.parse_query(params)
    limit = search.parse_limit(params.get("limit"))
    page = search.search_events(
        relay.store, query, params.get("cursor") or None, limit, pii=relay.settings.log_pii
    )
    return jsonify(page.to_dict())


@bp.post("/events/<event_id>/reroute")
def reroute_event(event_id: str) -> ResponseReturnValue:
    """Route a stored event again through the rules in force now (new deliveries)."""
    _query()
    relay = current_relay()
    report = reroute.reroute(relay.store, relay.celery, relay.rules, [event_id])
    if report.not_found:
        raise NotFoundError(f"no event {event_id!r} (history is kept RELAY_HISTORY_TTL)")
    audit.rerouted(logins.actor(), report)
    return jsonify(report.to_dict()), 202


@bp.post("/rules/diff")
def diff_rules() -> ResponseReturnValue:
    """Body: a candidate rules file (YAML text), read without the environment. What it
    would change for the events of the window, against the rules in force, matched for
    ``rules_diff.WEB_BUDGET`` seconds at most (then ``truncated``); sends nothing."""
    params = _query("since", "limit")
    since = rules_diff.DEFAULT_SINCE
    if "since" in params:
        try:
            since = parse_duration(params["since"])
        except ValueError as exc:
            raise RequestError(str(exc), "since") from None
    limit = _integer(
        params.get("limit"), "limit", rules_diff.DEFAULT_LIMIT, 1, rules_diff.MAX_LIMIT
    )
    try:
        text = request.get_data(cache=False).decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the rules file must be UTF-8 text", "body") from None
    if not text.strip():
        raise RequestError("a candidate rules file (YAML text)", "body")
    relay = current_relay()
    try:
        candidate = rules_diff.load_candidate(text, relay.settings)
    except RulesError as exc:
        return jsonify(
            error="invalid_rules", detail=exc.errors[0], field="body", errors=exc.errors
        ), 400
    budget = rules_diff.WEB_BUDGET  # looked up here: a test may shorten it
    result = rules_diff.diff_rules(relay.store, relay.rules, candidate, since, limit, budget=budget)
    audit.diffed(logins.actor(), result)
    return jsonify(result.to_dict())


@bp.get("/events/<path:ref>")
def show_event(ref: str) -> ResponseReturnValue:
    _query()
    store = current_relay().store
    events = history.event_history(store, ref)
    if not events:
        raise NotFoundError(f"no event with id, transid or tid {ref!r}")
    life = lifecycle.message_lifecycle(store, ref, events)  # ref is a transid
    return jsonify(query=ref, events=_for_caller(events), **({"lifecycle": life} if life else {}))


@bp.post("/rules/test")
def rules_test() -> ResponseReturnValue:
    """A raw Webex Connect payload → the dry run against the rules this process runs."""
    source = _query("source").get("source", "default")
    parsing.check_source(source)
    parsing.check_content_type(request.headers.get("Content-Type"))
    document = parsing.decode(request.get_data(cache=False))
    relay = current_relay()
    reports = dry_run(relay.rules, document, relay.settings, source)
    return jsonify(rules_version=relay.rules.version, reports=reports)


# -- helpers --------------------------------------------------------------------------------


def _query(*allowed: str) -> dict[str, str]:
    """The query parameters, each given once; a 400 for any other."""
    for name in request.args:
        if name not in allowed:
            raise RequestError(f"unknown query parameter {name!r}", name)
        if len(request.args.getlist(name)) > 1:
            raise RequestError("given more than once", name)
    return dict(request.args)


def _integer(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(f"{raw!r} is not a whole number", name) from None
    if not low <= value <= high:
        raise RequestError(f"must be between {low} and {high}", name)
    return value


def _request_object() -> dict[str, Any]:
    """The request's body: a JSON object, else a 400 naming the body."""
    parsing.check_content_type(request.headers.get("Content-Type"))
    try:
        document = parsing.decode(request.get_data(cache=False))
    except RelayError as exc:
        raise RequestError(str(exc), "body") from None
    if not isinstance(document, dict):
        raise RequestError("expected a JSON object", "body")
    return document
