"""Operator tools for destinations: list their state, pause and resume them.

Plain functions over a :class:`relay.state.Store`, the rules in force (the destinations
they name) and, to resume, a *publisher* (anything with Celery's ``send_task``).
``relay.cli.destinations`` (``relay destinations …``) and ``relay.web.api`` (``/api/destinations``)
are thin adapters over them and answer with the same JSON shape
(:meth:`DestinationStatus.to_dict`).

A pause lives in Redis (every worker sees it at its next attempt) and may expire by
itself (``for_seconds``). While paused, a destination's deliveries wait, parked, without
spending attempts; :func:`resume` publishes every parked one again at once (they then go
out at the destination's rate limit, if it has one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from relay.errors import UnknownDestinationError
from relay.ops import Publisher
from relay.rules import Destination, Ruleset
from relay.state import Store
from relay.times import format_duration

#: the longest pause accepted with ``for_seconds`` (a year)
MAX_PAUSE = 366 * 86400.0
#: blocked keys listed per destination (the oldest); ``blocked_keys`` counts them all
BLOCKED_SHOWN = 5


@dataclass(frozen=True)
class Profile:
    """What the rules say of a destination that its status shows."""

    type: str
    rate_limit: str | None = None
    concurrency: int | None = None
    circuit_breaker: str | None = None
    ordered_by: str | None = None


Known = Mapping[str, Destination] | Mapping[str, Profile]  #: the destinations by name


def profile_of(destination: Destination | Profile) -> Profile:
    if isinstance(destination, Profile):
        return destination
    rate, breaker = destination.rate_limit, destination.circuit_breaker
    return Profile(
        type=destination.type,
        rate_limit=f"{rate.count}/{_per(rate.per)}" if rate else None,
        concurrency=destination.concurrency,
        circuit_breaker=(
            f"{breaker.failures} failures, {format_duration(breaker.cooldown)} cooldown"
            if breaker
            else None
        ),
        ordered_by=destination.ordered_by,
    )


def record_in_force(store: Store, ruleset: Ruleset) -> None:
    """This process runs ``ruleset``: recorded in Redis for the commands beside it."""
    found = {name: asdict(profile_of(d)) for name, d in ruleset.destinations.items()}
    store.rules_in_force.record(ruleset.version, found)


def in_force(store: Store) -> tuple[str, dict[str, Profile]] | None:
    """The version and destinations of the rules in force as recorded in Redis, or None
    when no process has recorded any yet."""
    record = store.rules_in_force.read()
    if record is None:
        return None
    try:
        found = {name: Profile(**fields) for name, fields in record.destinations.items()}
    except TypeError:  # written by another version of relay, with other fields
        return None
    return record.version, found


@dataclass(frozen=True)
class DestinationStatus:
    """One destination as operators see it.

    ``state``: ``paused`` (wins over the circuit), else the circuit's: ``open``,
    ``half-open`` or ``active``. ``backlog``: its deliveries not yet settled (waiting,
    queued, in a retry's backoff or under way). ``success_rate``, ``p95_seconds`` and
    ``attempts``: over the last 5 minutes (``p95_seconds`` is the upper bound of its
    latency bucket). ``ordered_by``: the field its deliveries are ordered by;
    ``blocked_keys``: how many of its keys a dead letter holds (``on_failure: block``),
    ``blocked``: the oldest :data:`BLOCKED_SHOWN` of them (``value``, the dead letter's
    ``delivery_id``, ``since``). Times are ISO 8601 UTC.
    """

    name: str
    type: str
    state: str
    circuit: str
    paused_since: str | None
    paused_until: str | None
    backlog: int
    in_flight: int
    attempts: int
    success_rate: float | None
    p95_seconds: float | None
    last_error: str | None
    last_error_at: str | None
    rate_limit: str | None
    concurrency: int | None
    circuit_breaker: str | None
    ordered_by: str | None = None
    blocked_keys: int = 0
    blocked: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Resumed:
    """What :func:`resume` did: the destination now, and how many parked deliveries it
    published again."""

    destination: DestinationStatus
    republished: int

    def to_dict(self) -> dict[str, Any]:
        return {"destination": self.destination.to_dict(), "republished": self.republished}


def list_destinations(store: Store, destinations: Known) -> list[DestinationStatus]:
    """Every destination of the rules, by name."""
    return _statuses(store, destinations, sorted(destinations))


def status(store: Store, destinations: Known, name: str) -> DestinationStatus:
    _known(destinations, name)
    return _statuses(store, destinations, [name])[0]


def pause(
    store: Store,
    destinations: Known,
    name: str,
    for_seconds: float | None = None,
) -> DestinationStatus:
    """Pause ``name`` until resumed, or for ``for_seconds``; pausing again replaces the
    pause. Like every operator's write, confirmed by ``RELAY_REDIS_MIN_REPLICAS`` replicas
    before it returns (else UnavailableError: it may not survive a failover)."""
    _known(destinations, name)
    if for_seconds is not None and not 0 < for_seconds <= MAX_PAUSE:
        raise ValueError(f"a pause lasts more than 0 s and at most {MAX_PAUSE:g} s")
    store.controls.pause(name, for_seconds)
    store.confirm_replicated()
    return status(store, destinations, name)


def resume(store: Store, publisher: Publisher, destinations: Known, name: str) -> Resumed:
    """End ``name``'s pause (if any) and publish its parked deliveries again."""
    _known(destinations, name)
    parked = store.controls.resume(name)
    count = 0
    for _member, spec in parked:
        if isinstance(spec, dict) and spec.get("task") and isinstance(spec.get("args"), list):
            publisher.send_task(spec["task"], args=spec["args"])
            count += 1
    store.confirm_replicated()
    return Resumed(status(store, destinations, name), count)


def _known(destinations: Known, name: str) -> None:
    if name not in destinations:
        raise UnknownDestinationError(name)


def _statuses(store: Store, destinations: Known, names: list[str]) -> list[DestinationStatus]:
    controls = store.controls
    profiles = {name: profile_of(destinations[name]) for name in names}
    pauses = controls.paused(names)
    circuits = controls.circuits(names)
    inflight = controls.inflight(names)
    errors = controls.last_errors(names)
    stats = controls.stats(names)
    backlog = store.pending.backlog()
    blocked = store.ordering.blocked([n for n in names if profiles[n].ordered_by])
    out = []
    for name in names:
        profile = profiles[name]
        pause_ = pauses.get(name)
        circuit = circuits[name].state
        error = errors.get(name) or {}
        out.append(
            DestinationStatus(
                name=name,
                type=profile.type,
                state="paused" if pause_ else ("active" if circuit == "closed" else circuit),
                circuit=circuit,
                paused_since=_iso(pause_.since) if pause_ else None,
                paused_until=_iso(pause_.until) if pause_ and pause_.until else None,
                backlog=backlog.get(name, 0),
                in_flight=inflight[name],
                attempts=stats[name].attempts,
                success_rate=_rounded(stats[name].success_rate),
                p95_seconds=stats[name].p95,
                last_error=str(error["error"]) if error.get("error") else None,
                last_error_at=_iso(float(str(error["at"]))) if error.get("at") else None,
                rate_limit=profile.rate_limit,
                concurrency=profile.concurrency,
                circuit_breaker=profile.circuit_breaker,
                ordered_by=profile.ordered_by,
                blocked_keys=len(blocked.get(name, ())),
                blocked=tuple(
                    {"value": b.value, "delivery_id": b.delivery_id, "since": _iso(b.since)}
                    for b in blocked.get(name, [])[:BLOCKED_SHOWN]
                ),
            )
        )
    return out


def _iso(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _per(seconds: float) -> str:
    """``1`` → ``s``, ``60`` → ``m``, ``0.1`` → ``100ms``, ``30`` → ``30s``."""
    for size, unit in ((3600.0, "h"), (60.0, "m"), (1.0, "s")):
        if seconds == size:
            return unit
        if seconds >= size and seconds / size == int(seconds / size):
            return f"{int(seconds / size)}{unit}"
    return f"{seconds * 1000:g}ms"
