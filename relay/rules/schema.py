"""The strict schema of a rules file (config/README.md): the keys each part may have.

Every table lists the allowed keys; anything else is an error with a typo hint. Routes
without ``match`` match every event (``match: {}`` and an empty ``match:`` mean the same).
``retry`` keys left out take the defaults (``attempts: 20, initial: 2s, max: 30m``), not the
destination's: a route's ``retry`` replaces the destination's policy as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import asdict
from types import MappingProxyType
from typing import Any

from relay.errors import ConditionError, RuleValueError
from relay.rules.fields import field_problem
from relay.rules.http_auth import check_http_auth, read_auth, read_tls
from relay.rules.matcher import MATCH_ALL, compile_condition
from relay.rules.model import (
    ALERT_KINDS,
    ALERT_LABELS,
    DESTINATION_TYPES,
    NOTIFICATION_NAMES,
    CircuitBreaker,
    Destination,
    Lifecycle,
    Notification,
    RateLimit,
    Route,
    Signing,
    secret_key,
)
from relay.rules.payloads import read_structured
from relay.rules.reader import (
    FAILED,
    Key,
    Reader,
    boolean,
    duration,
    html_template,
    positive_int,
    slack_template,
    string,
    template,
    text_or_number,
    url,
)
from relay.rules.retry import DEFAULT_RETRY, RetryPolicy
from relay.rules.suggest import did_you_mean
from relay.rules.templates import Template, compile_template, unknown_names
from relay.times import format_duration, parse_duration

Path = tuple[str | int, ...]

#: what a ``log`` destination writes when it has no ``text``
DEFAULT_LOG_TEXT = compile_template(
    "{{ route }} → {{ destination }}: {{ event.get('kind') }} {{ event.get('id') }}"
    "{% if event.get('kind') == 'inbound_message' %}"
    " from {{ event.get('sender') | mask }} keyword={{ event.get('keyword') }}"
    "{% elif event.get('kind') == 'receipt_overdue' %}"
    " transid={{ event.get('transid') }} no final receipt in {{ event.get('age_seconds') }}s"
    " (last {{ event.get('last_status') }} {{ event.get('last_code') }})"
    " to {{ event.get('destination') | mask }}"
    "{% else %}"
    " {{ event.get('status') }} code={{ event.get('code') }}"
    " to {{ event.get('destination') | mask }}"
    "{% endif %}"
)
#: what a ``slack`` destination posts when it has no ``text``: a fallback's failure, or
#: the event in one line
DEFAULT_SLACK_TEXT = compile_template(
    "{% if failure %}"
    "{{ failure.destination }} gave up on {{ event.get('kind') }} {{ event.get('id') }}"
    " after {{ failure.attempts }} attempt{{ '' if failure.attempts == 1 else 's' }}:"
    " {{ failure.last_error }}"
    "{% else %}"
    "{{ route }} → {{ destination }}: {{ event.get('kind') }} {{ event.get('id') }}"
    "{% if event.get('kind') == 'inbound_message' %}"
    " from {{ event.get('sender') | mask }} keyword={{ event.get('keyword') }}"
    "{% elif event.get('kind') == 'receipt_overdue' %}"
    " transid={{ event.get('transid') }} no final receipt in {{ event.get('age_seconds') }}s"
    " (last {{ event.get('last_status') }} {{ event.get('last_code') }})"
    " to {{ event.get('destination') | mask }}"
    "{% else %}"
    " {{ event.get('status') }} code={{ event.get('code') }}"
    " to {{ event.get('destination') | mask }}"
    "{% endif %}{% endif %}",
    "slack",
)
HTTP_METHODS = ("POST", "PUT", "PATCH")
HTTP_BODIES = ("event", "raw")


def _retry(reader: Reader, path: Path, value: Any) -> RetryPolicy:
    values = reader.fields(path, value, RETRY_KEYS)
    if values is None:
        return FAILED  # type: ignore[no-any-return]  # FAILED stands in for any type
    merged = {**asdict(DEFAULT_RETRY), **values}
    if merged["max"] < merged["initial"]:
        longest, shortest = format_duration(merged["max"]), format_duration(merged["initial"])
        where = path + ("max",) if "max" in values else path
        reader.error(where, f"max ({longest}) is shorter than initial ({shortest})")
        return FAILED  # type: ignore[no-any-return]  # FAILED stands in for any type
    return RetryPolicy(**merged)


RETRY_KEYS = {"attempts": Key(positive_int), "initial": Key(duration), "max": Key(duration)}


def _sign(reader: Reader, path: Path, value: Any) -> Signing:
    values = reader.fields(path, value, {"secret": Key(_signing_secrets, required=True)})
    return FAILED if values is None else Signing(**values)


def _signing_secrets(reader: Reader, path: Path, value: Any) -> str:
    """One or more space-separated secrets, each raw text or ``whsec_<base64>``."""
    text = string(reader, path, value)
    for secret in text.split():
        try:
            secret_key(secret)
        except ValueError as exc:
            raise RuleValueError(str(exc)) from None
    return text


def _method(reader: Reader, path: Path, value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in HTTP_METHODS:
        raise RuleValueError(f"method must be one of {', '.join(HTTP_METHODS)}, got {value!r}")
    return value.upper()


def _body(reader: Reader, path: Path, value: Any) -> Any:
    if isinstance(value, (Mapping, list)):
        return read_structured(reader, path, value, "text")
    if not isinstance(value, str):
        raise RuleValueError(
            "expected event, raw, a template string, or a mapping or list (structured)"
        )
    if value in HTTP_BODIES:
        return value
    if re.fullmatch(r"\s*\w+\s*", value):  # one bare word: a misspelt keyword, not a body
        hint = did_you_mean(value.strip(), HTTP_BODIES)
        raise RuleValueError(f"unknown body {value!r}: expected event, raw or a template{hint}")
    return reader.template(path, value)


def _blocks(reader: Reader, path: Path, value: Any) -> Any:
    """Slack blocks: a template string of JSON, or a YAML list of block mappings."""
    if isinstance(value, str):
        return slack_template(reader, path, value)
    if not isinstance(value, list):
        raise RuleValueError(
            "expected a list of blocks (each a mapping with a type) or a template string"
        )
    problems = [_block_problem(block) for block in value]
    for i, problem in enumerate(problems):
        if problem:
            reader.error(path + (i,), problem)
    if any(problems):
        return FAILED
    return read_structured(reader, path, value, "slack")


def _block_problem(block: Any) -> str | None:
    if not isinstance(block, Mapping):
        return "expected a block: a mapping with a type"
    if not isinstance(block.get("type"), str) or not block["type"].strip():
        return "a block needs a type (section, context, divider …)"
    return None


def _headers(reader: Reader, path: Path, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RuleValueError("expected a mapping of header names to values")
    headers = {name: reader.value(_header, path + (name,), item) for name, item in value.items()}
    if any(item is FAILED for item in headers.values()):
        return FAILED  # type: ignore[no-any-return]  # FAILED stands in for any type
    return MappingProxyType(headers)


def _header(reader: Reader, path: Path, value: Any) -> Any:
    return reader.template(path, text_or_number(reader, path, value))


def _addresses(reader: Reader, path: Path, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise RuleValueError("expected an email address or a non-empty list of them")
    for item in items:
        if not isinstance(item, str) or "@" not in item.strip("@"):
            raise RuleValueError(f"not an email address: {item!r}")
    return tuple(items)


def _any(reader: Reader, path: Path, value: Any) -> Any:
    return value


DESTINATION_KEYS: Mapping[str, Mapping[str, Key]] = {
    "http": {
        "url": Key(url, required=True),
        "method": Key(_method),
        "headers": Key(_headers),
        "body": Key(_body),
        "timeout": Key(duration),
        "sign": Key(_sign),
        "tls": Key(read_tls),
        "auth": Key(read_auth),
    },
    "log": {"text": Key(template)},
    "email": {
        "to": Key(_addresses, required=True),
        "cc": Key(_addresses),
        "subject": Key(template, required=True),
        "body": Key(template, required=True),
        "html": Key(html_template),
    },
    "slack": {
        "webhook_url": Key(url),
        "token": Key(string),
        "channel": Key(string),
        "text": Key(slack_template),
        "blocks": Key(_blocks),
    },
    "sms_reply": {
        "text": Key(template, required=True),
        "from": Key(text_or_number, attr="from_"),
        "cooldown": Key(duration),
        "to_opted_out": Key(boolean),
    },
}


_RATE = re.compile(r"\s*(\d+)\s*/\s*(\S.*?)\s*")
_RATE_EXAMPLES = "20/s, 600/m, 5/100ms: a whole number per a duration"


def _rate_limit(reader: Reader, path: Path, value: Any) -> RateLimit:
    """``COUNT/PER``: ``20/s``, ``600/m``, ``5/100ms``, ``100/2s``."""
    found = _RATE.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise RuleValueError(f"bad rate {value!r} (use {_RATE_EXAMPLES})")
    count, per = found.groups()
    try:  # a bare unit is one of it: "s" is "1s"
        seconds = parse_duration(per if per[0].isdigit() or per[0] == "." else f"1{per}")
    except ValueError:
        raise RuleValueError(f"bad rate {value!r} (use {_RATE_EXAMPLES})") from None
    if int(count) < 1 or seconds <= 0:
        raise RuleValueError(f"bad rate {value!r}: the count and the duration must be above 0")
    return RateLimit(int(count), seconds)


def _circuit_breaker(reader: Reader, path: Path, value: Any) -> CircuitBreaker:
    values = reader.fields(path, value, CIRCUIT_BREAKER_KEYS)
    if values is None:
        return FAILED  # type: ignore[no-any-return]  # FAILED stands in for any type
    return CircuitBreaker(**{**DEFAULT_CIRCUIT_BREAKER, **values})


CIRCUIT_BREAKER_KEYS = {"failures": Key(positive_int), "cooldown": Key(duration)}
DEFAULT_CIRCUIT_BREAKER = {"failures": 5, "cooldown": 30.0}


def _field_path(reader: Reader, path: Path, value: Any) -> str:
    """An event field path, as a condition may name it (``transid``, ``callback.order``)."""
    text = string(reader, path, value)
    problem = field_problem(text)
    if problem:
        raise RuleValueError(problem)
    return text


def _on_failure(reader: Reader, path: Path, value: Any) -> str:
    if value not in ON_FAILURE:
        raise RuleValueError(f"expected {' or '.join(ON_FAILURE)}, got {value!r}")
    return str(value)


#: what a dead-lettered ordered delivery does to its key: the next goes, or all wait
ON_FAILURE = ("skip", "block")

#: keys every destination may have, whatever its type
CONTROL_KEYS: Mapping[str, Key] = {
    "retry": Key(_retry),
    "rate_limit": Key(_rate_limit),
    "concurrency": Key(positive_int),
    "circuit_breaker": Key(_circuit_breaker),
    "fallback": Key(string),  # that it names a destination is a whole-file check (loader)
    "ordered_by": Key(_field_path),
    "on_failure": Key(_on_failure),
}


def read_destination(reader: Reader, name: str, data: Any) -> Destination | None:
    """The destination ``name`` defined by ``data``, or ``None`` after reporting problems."""
    path: Path = ("destinations", name)
    kind = _destination_type(reader, path, data)
    if kind is None:
        return None
    keys = {"type": Key(_any), **DESTINATION_KEYS[kind], **CONTROL_KEYS}
    values = reader.fields(path, data, keys)
    if values is None or (kind == "slack" and not _slack_target(reader, path, values)):
        return None
    if "on_failure" in values and "ordered_by" not in values:
        where = path + ("on_failure",)
        reader.error(where, "on_failure applies to ordered deliveries: add ordered_by")
        return None
    if kind == "http" and not check_http_auth(reader, path, values):
        return None
    del values["type"]
    if kind == "log":
        values.setdefault("text", DEFAULT_LOG_TEXT)
    if kind == "slack":
        values.setdefault("text", DEFAULT_SLACK_TEXT)
    return DESTINATION_TYPES[kind](name=name, line=reader.doc.line(path), **values)


def _destination_type(reader: Reader, path: Path, data: Any) -> str | None:
    if not isinstance(data, Mapping):
        reader.error(path, "expected a mapping")
        return None
    if "type" not in data:
        reader.error(path, f"missing required key 'type' (one of {', '.join(DESTINATION_KEYS)})")
        return None
    kind = data["type"]
    if kind not in DESTINATION_KEYS:
        hint = did_you_mean(str(kind), DESTINATION_KEYS)
        reader.error(path + ("type",), f"unknown destination type {kind!r}{hint}")
        return None
    return str(kind)


def _slack_target(reader: Reader, path: Path, values: Mapping[str, Any]) -> bool:
    webhook, token, channel = (values.get(k) for k in ("webhook_url", "token", "channel"))
    if webhook and (token or channel):
        reader.error(path, "use either webhook_url or token and channel, not both")
    elif not webhook and not (token and channel):
        reader.error(path, "needs webhook_url, or token and channel")
    else:
        return True
    return False


def _match(reader: Reader, path: Path, value: Any) -> Any:
    try:
        return compile_condition(value)
    except ConditionError as exc:
        for problem in exc.problems:
            reader.error(path + problem.at, problem.message, where=path + problem.where)
        return FAILED


def _targets(known: Collection[str]) -> Key:
    def parse(reader: Reader, path: Path, value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise RuleValueError("expected a destination name or a non-empty list of them")
        problems = [_target_problem(items, i, known) for i in range(len(items))]
        for i, problem in enumerate(problems):
            if problem:
                reader.error(path + (i,) if isinstance(value, list) else path, problem)
        return FAILED if any(problems) else tuple(items)

    return Key(parse, required=True)


def _target_problem(items: list[Any], i: int, known: Collection[str]) -> str | None:
    item = items[i]
    if not isinstance(item, str):
        return f"expected a destination name, got {item!r}"
    if item in items[:i]:
        return f"destination {item!r} is listed twice"
    if item not in known:
        return f"undefined destination {item!r}{did_you_mean(item, known)}"
    return None


def read_route(reader: Reader, path: Path, data: Any, known: Collection[str]) -> Route | None:
    """The route at ``path`` (``("routes", i)`` or ``("default",)``), or ``None`` on problems.

    ``known`` holds every destination name defined in the file, valid or not.
    """
    is_default = path == ("default",)
    keys: dict[str, Key] = {}
    if not is_default:
        keys |= {"name": Key(string, required=True), "match": Key(_match, attr="condition")}
    keys |= {"to": _targets(known), "retry": Key(_retry)}
    if not is_default:
        keys["continue"] = Key(boolean, attr="continue_")
    values = reader.fields(path, data, keys)
    if values is None:
        return None
    if values.get("name") == "default":
        reader.error(path + ("name",), "the name 'default' is reserved for the default route")
        return None
    values.setdefault("name", "default")
    values.setdefault("condition", MATCH_ALL)
    match = freeze(data.get("match"))
    return Route(**values, match=match, line=reader.doc.line(path))


def freeze(data: Any) -> Any:
    """``data`` with mappings made read-only and lists made tuples, recursively."""
    if isinstance(data, Mapping):
        return MappingProxyType({key: freeze(value) for key, value in data.items()})
    if isinstance(data, list):
        return tuple(freeze(item) for item in data)
    return data


def _alert_kinds(reader: Reader, path: Path, value: Any) -> tuple[str, ...]:
    return _names(reader, path, value, ALERT_KINDS, "alert kind", empty=False)


def _group_labels(reader: Reader, path: Path, value: Any) -> tuple[str, ...]:
    return _names(reader, path, value, ALERT_LABELS, "label", empty=True)


def _names(
    reader: Reader, path: Path, value: Any, allowed: tuple[str, ...], noun: str, *, empty: bool
) -> tuple[str, ...]:
    """A list of distinct names out of ``allowed`` (a single name is a list of one)."""
    items = [value] if isinstance(value, str) else value
    choices = ", ".join(allowed)
    if not isinstance(items, list) or (not items and not empty):
        raise RuleValueError(f"expected a list of: {choices}")
    ok = True
    for i, item in enumerate(items):
        where = path + (i,) if isinstance(value, list) else path
        if item not in allowed:
            hint = did_you_mean(str(item), allowed) or f" (one of {choices})"
            reader.error(where, f"unknown {noun} {item!r}{hint}")
            ok = False
        elif item in items[:i]:
            reader.error(where, f"{noun} {item!r} is listed twice")
            ok = False
    return tuple(items) if ok else FAILED


def read_notification(
    reader: Reader, path: Path, data: Any, known: Collection[str]
) -> Notification | None:
    """The notification at ``path`` (``("notifications", i)``), or ``None`` on problems."""
    keys = {
        "name": Key(string, required=True),
        "on": Key(_alert_kinds, required=True),
        "group_by": Key(_group_labels),
        "group_wait": Key(duration),
        "group_interval": Key(duration),
        "to": _targets(known),
        "template": Key(_notification_template),
    }
    values = reader.fields(path, data, keys)
    if values is None:
        return None
    return Notification(**values, line=reader.doc.line(path))


def _notification_template(reader: Reader, path: Path, value: Any) -> Template:
    """A notification's template, reading only the names its message has: one that reads
    ``event`` (as destinations' templates do) could never render a message."""
    compiled = template(reader, path, value)
    if compiled is FAILED:
        return compiled  # type: ignore[no-any-return]  # FAILED stands in for any type
    unknown = unknown_names(compiled, NOTIFICATION_NAMES)
    if unknown:
        names = ", ".join(NOTIFICATION_NAMES)
        raise RuleValueError(f"unknown name {unknown[0]!r}: a notification's template sees {names}")
    return compiled


def read_lifecycle(reader: Reader, data: Any) -> Lifecycle | None:
    """The ``lifecycle`` mapping (``final_receipt_within``, a duration), or ``None`` when
    it is null or has problems (reported)."""
    if data is None:
        return None
    keys = {"final_receipt_within": Key(duration, required=True)}
    values = reader.fields(("lifecycle",), data, keys)
    if values is None:
        return None
    return Lifecycle(**values, line=reader.doc.line(("lifecycle",)))
