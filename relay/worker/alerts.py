"""relay's own alerts, grouped into notification messages (the rules' ``notifications``).

:func:`emit` records an alert for every notification that is ``on`` its kind: the alert
joins the notification group its labels (``group_by``) name, in Redis
(:mod:`relay.state.alerts`). It is called on a dead letter (:func:`dead_letter`) and when a
destination's circuit opens or closes. It never raises: an alert that cannot be recorded
is logged and dropped, so it never disturbs the delivery that caused it.

A flusher thread in every worker (:func:`start`) claims the groups whose message is due
(each by one worker only) and sends one message per group to each of the notification's
destinations, through the destination's action directly: not as a delivery, so a
message that cannot be sent is logged and counted (``relay_alert_messages_dropped_total``)
and nothing more: no retry budget, no dead letter, no alert about it — no loops.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from relay import metrics
from relay.actions import Outcome, registry
from relay.events import (
    AlertExample,
    AlertGroup,
    Event,
    Job,
    RetrySpec,
    new_id,
    new_job,
    utc_now_iso,
)
from relay.rules import (
    Destination,
    EmailDestination,
    HttpDestination,
    LogDestination,
    SlackDestination,
    Template,
    TemplateError,
)
from relay.rules.model import Notification, Ruleset
from relay.rules.templates import Mode, compile_template
from relay.settings import Settings
from relay.worker.runtime import Runtime

log = logging.getLogger("relay.alerts")

#: seconds between two looks at the schedule of notification groups
FLUSH_INTERVAL = 0.5
#: an example's error text is cut to this many characters
ERROR_CHARS = 300
#: seconds before the one second try at a message that failed transiently
RETRY_AFTER = 1.0

#: the message when a notification has no ``template`` (names: see :func:`message_context`)
DEFAULT_TEMPLATE = (
    "relay: {{ notification }}"
    "{% for name, value in labels.items() %} · {{ name }} {{ value }}{% endfor %} — "
    "{% for kind, count in counts.items() %}{{ count }} {{ kind }}"
    "{% if not loop.last %}, {% endif %}{% endfor %}"
    "{% for e in examples %}\n• {{ e.get('kind') }} {{ e.get('destination', '') }}"
    "{% if e.get('route') %} (route {{ e.route }}){% endif %}"
    "{% if e.get('event_id') %} event {{ e.event_id }}{% endif %}"
    "{% if e.get('attempts') %} after {{ e.attempts }} attempt"
    "{{ 's' if e.attempts != 1 else '' }}{% endif %}"
    "{% if e.get('error') %}: {{ e.error }}{% endif %}{% endfor %}"
    "{% if total > examples | length %}\n… and {{ total - examples | length }} more"
    "{% endif %}"
)


# -- recording --------------------------------------------------------------------------


def emit(
    runtime: Runtime,
    kind: str,
    labels: Mapping[str, str],
    details: Mapping[str, Any] | None = None,
) -> None:
    """Record an alert of ``kind`` (``dead_letter``, ``circuit_open``, ``circuit_closed``).

    ``labels``: ``destination`` and, for a dead letter, ``route`` (``kind`` is added);
    ``details``: what an example shows (``event_id``, ``delivery_id``, ``error`` …).
    """
    try:
        _record(runtime, kind, labels, details or {})
    except Exception as exc:  # an alert must never fail what caused it
        log.warning("alert %s for %s not recorded: %s", kind, labels.get("destination"), exc)


def dead_letter(runtime: Runtime, job: Job, reason: str, attempts: int) -> None:
    """The alert for the dead-lettered delivery ``job``."""
    details: dict[str, Any] = {
        "event_id": job["event"].get("id", ""),
        "delivery_id": job["delivery_id"],
        "error": reason,
        "attempts": attempts,
    }
    if "failure" in job:
        details["fallback_of"] = job["failure"]["destination"]
    labels = {"destination": job["destination"], "route": job["route"] or ""}
    emit(runtime, "dead_letter", labels, details)


def _record(
    runtime: Runtime, kind: str, labels: Mapping[str, str], details: Mapping[str, Any]
) -> None:
    every = {**{name: str(value) for name, value in labels.items()}, "kind": kind}
    example = _example(kind, every, details)
    wanted = [n for n in runtime.rules.get(None).notifications if kind in n.on]
    for notification in wanted:
        grouped = {name: every.get(name, "") for name in notification.group_by}
        runtime.store.alerts.record(
            group_id(notification.name, grouped),
            notification.name,
            grouped,
            example,
            notification.group_wait,
            notification.group_interval,
        )
    metrics.m().alerts.labels(kind).inc()


def _example(kind: str, labels: Mapping[str, str], details: Mapping[str, Any]) -> AlertExample:
    example: dict[str, Any] = {"kind": kind, "at": utc_now_iso()}
    example.update((name, value) for name, value in labels.items() if name != "kind" and value)
    for name, value in details.items():
        example[name] = value if isinstance(value, (int, float, bool)) else str(value)
    if isinstance(example.get("error"), str) and len(example["error"]) > ERROR_CHARS:
        example["error"] = example["error"][: ERROR_CHARS - 1] + "…"
    return example  # type: ignore[return-value]


def group_id(notification: str, labels: Mapping[str, str]) -> str:
    """The id of the group of ``notification`` with these label values."""
    digest = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return f"{notification}:{digest}"


# -- sending ----------------------------------------------------------------------------


def flush_once(runtime: Runtime, now: float | None = None) -> int:
    """Send the message of every group that is due; returns how many groups."""
    groups = runtime.store.alerts.claim_due(now)
    for group in groups:
        send_group(runtime.rules.get(None), group, runtime.settings)
        runtime.store.alerts.sent(group["group"])
    return len(groups)


def start(runtime: Runtime, interval: float = FLUSH_INTERVAL) -> threading.Event:
    """Flush in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                flush_once(runtime)
            except Exception as exc:  # keep flushing; say why not
                log.warning("notifications not flushed: %s", exc)

    threading.Thread(target=loop, name="relay-alerts", daemon=True).start()
    return stop


def send_group(ruleset: Ruleset, group: AlertGroup, settings: Settings) -> list[Outcome]:
    """One message about ``group`` to each destination of its notification; failures are
    logged and counted, never raised, never notified about."""
    name = group["notification"]
    notification = next((n for n in ruleset.notifications if n.name == name), None)
    if notification is None:
        _dropped(name, "", "the notification is no longer in the rules")
        return []
    outcomes = []
    for target in notification.to:
        destination = ruleset.destinations.get(target)
        if destination is None:
            outcome = Outcome("permanent", error="the destination is no longer in the rules")
        else:
            outcome = _send_safely(notification, group, destination, settings)
        if outcome.ok:
            metrics.m().alert_messages_sent.labels(name, target).inc()
            log.info(
                "notification %s sent to %s: %s",
                name,
                target,
                _summary(group),
                extra={"destination": target, "step": "notification"},
            )
        else:
            _dropped(name, target, outcome.error or outcome.kind)
        outcomes.append(outcome)
    return outcomes


def _dropped(name: str, target: str, why: str) -> None:
    metrics.m().alert_messages_dropped.labels(name, target).inc()
    log.error(
        "notification %s to %s dropped: %s",
        name,
        target or "(none)",
        why,
        extra={"destination": target, "step": "notification_dropped"},
    )


def _summary(group: AlertGroup) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in group["counts"].items())


def _send_safely(
    notification: Notification, group: AlertGroup, destination: Destination, settings: Settings
) -> Outcome:
    try:
        prepared, job, target = _prepare(notification, group, destination, settings)
        outcome = registry.send(target, prepared, job, settings)
        if outcome.kind == "transient":  # one more try, then it is dropped
            time.sleep(RETRY_AFTER)
            outcome = registry.send(target, prepared, job, settings)
        return outcome
    except TemplateError as exc:
        return Outcome("permanent", error=f"template error: {exc}")
    except Exception as exc:  # a bug must not stop the flusher
        log.exception("notification %s: unexpected failure", notification.name)
        return Outcome("permanent", error=f"internal error: {type(exc).__name__}: {exc}")


def _prepare(
    notification: Notification, group: AlertGroup, destination: Destination, settings: Settings
) -> tuple[dict[str, Any], Job, Destination]:
    """What to send to ``destination``: the destination with its text replaced by the
    message, and a job that names the message (its id is the ``webhook-id``)."""
    context = message_context(group)
    mode: Mode = "slack" if isinstance(destination, SlackDestination) else "text"
    source = notification.template.source if notification.template else DEFAULT_TEMPLATE
    text = _compiled(source, mode).render_context(context)
    target = _with_message(destination, text, context)
    event: Event = {"id": new_id(), "kind": "relay_notification"}
    retry: RetrySpec = {"attempts": 1, "initial": 1.0, "max": 1.0}
    job = new_job(event, None, destination.name, "", retry)
    return registry.prepare(target, job, settings), job, target


def message_context(group: AlertGroup) -> dict[str, Any]:
    """The names a notification template sees: ``notification``, ``labels``, ``counts``
    (by kind), ``total``, ``examples`` (newest first; each with ``kind``, ``at``,
    ``destination``, ``route``, ``event_id``, ``delivery_id``, ``error``, ``attempts`` as
    the kind has them), ``first`` (when the group began) and ``previous`` (its last
    message, or None), both ISO 8601 UTC."""
    previous = group["previous"]
    return {
        "notification": group["notification"],
        "labels": group["labels"],
        "counts": group["counts"],
        "total": sum(group["counts"].values()),
        "examples": group["examples"],
        "first": _iso(group["first"]),
        "previous": _iso(previous) if previous is not None else None,
    }


def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@lru_cache(maxsize=64)
def _compiled(source: str, mode: Mode) -> Template:
    return compile_template(source, mode)


def _with_message(destination: Destination, text: str, context: Mapping[str, Any]) -> Destination:
    """``destination`` sending ``text`` (already rendered: constant templates) instead of
    what its own templates would render."""
    message = Template(text)
    first_line = text.splitlines()[0] if text else context["notification"]
    if isinstance(destination, SlackDestination):
        return dataclasses.replace(destination, text=message, blocks=None)
    if isinstance(destination, EmailDestination):
        subject = Template(first_line[:200])
        return dataclasses.replace(destination, subject=subject, body=message, html=None)
    if isinstance(destination, LogDestination):
        return dataclasses.replace(destination, text=message)
    if isinstance(destination, HttpDestination):
        body = Template(json.dumps({**context, "text": text}, ensure_ascii=False))
        return dataclasses.replace(destination, body=body)
    raise ValueError(f"a {destination.type} destination cannot send notifications")
