"""Talking to Redis: JSON in and out, errors made plain, health and replication checks.

Clients are made by :mod:`relay.state.connection`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from relay.errors import NotReplicatedError, UnavailableError
from relay.state.connection import demoted

#: what a Redis call raises when the server is away or answers too slowly
_AWAY = (redis.ConnectionError, redis.TimeoutError)
RedisError = redis.RedisError
#: error replies of a server that is not (or not yet, or no longer) a writable primary:
#: a failover under way, not a fault of the call
FAILOVER_REPLIES = ("READONLY", "MASTERDOWN", "LOADING", "NOREPLICAS", "TRYAGAIN")
MAX_REPLICA_LAG = 2  #: seconds since a replica's last acknowledgement, for readiness


def dumps(value: object) -> str:
    """JSON with ``ensure_ascii=True``, so any text a sender manages to put in a payload
    (lone surrogates included) can be stored and read back."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def loads(raw: str | bytes) -> Any:
    return json.loads(raw)


def texts(reply: Any) -> list[str]:
    """The members of a list reply as text (the client decodes responses)."""
    return [item if isinstance(item, str) else item.decode() for item in reply]


def is_unavailable(exc: BaseException) -> bool:
    """True for a connection problem, a timeout, or a server that cannot take writes now
    (a failover): the call may succeed on the next try."""
    if isinstance(exc, _AWAY):
        return True
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        return (
            text.startswith(FAILOVER_REPLIES)
            or getattr(exc, "status_code", None) in FAILOVER_REPLIES
            or demoted(exc)
        )
    return False


#: error replies of a server that cannot take this write now, though nothing is wrong with it
BUSY_REPLIES = ("OOM", "BUSY")


def is_infrastructure(exc: BaseException) -> bool:
    """True for a failure of the state store rather than of the work in hand: Redis away,
    a timeout, a failover (:func:`is_unavailable`), or a server out of memory or busy with
    a script. Such work is tried again; any other error would only repeat."""
    if isinstance(exc, UnavailableError) or is_unavailable(exc):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(BUSY_REPLIES)


@contextmanager
def unavailable_on_error() -> Iterator[None]:
    """Turns a Redis connection problem, timeout or failover reply into UnavailableError."""
    try:
        yield
    except RedisError as exc:
        if is_unavailable(exc):
            raise UnavailableError(f"redis: {exc}") from exc
        raise


def wait_for_replicas(pipe: Any, replicas: int, timeout: float) -> None:
    """Add to ``pipe`` (a pipeline without MULTI, so on the connection that wrote): WAIT
    for ``replicas`` replicas to confirm every write before it, up to ``timeout`` s."""
    pipe.execute_command("WAIT", replicas, max(int(timeout * 1000), 1))


def confirmed(acknowledged: Any, replicas: int, timeout: float) -> None:
    """NotReplicatedError unless ``acknowledged`` (WAIT's answer) reaches ``replicas``."""
    if int(acknowledged) < replicas:
        raise NotReplicatedError(
            f"redis: written, but confirmed by {int(acknowledged)} of the {replicas} "
            f"replica(s) needed within {timeout * 1000:g}ms (RELAY_REDIS_MIN_REPLICAS)"
        )


def check(client: redis.Redis) -> str:
    """``ok``, or why not (for readiness)."""
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"error: {exc}"
    return "ok"


def server_id(client: redis.Redis) -> str:
    """The run id of the server answering now: another one after a failover (or a
    restart)."""
    return str(client.info("server").get("run_id", ""))


def replicas_online(client: redis.Redis, max_lag: int = MAX_REPLICA_LAG) -> int:
    """Replicas connected to the primary and acknowledging its stream: a replica acks
    every second, so one silent for more than ``max_lag`` seconds (stopped, cut off) does
    not count, although the primary still lists it as online."""
    info = client.info("replication")
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave")
        and isinstance(value, dict)
        and value.get("state") == "online"
        and int(value.get("lag", 0)) <= max_lag
    )


def eviction_warning(client: redis.Redis) -> str | None:
    """A warning when this Redis may evict keys (events could vanish), else None."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.ResponseError:
        return None  # CONFIG is disabled (managed Redis): nothing to tell
    if policy and policy != "noeviction":
        return (
            f"Redis maxmemory-policy is {policy!r}: keys (queued events, history, dead "
            "letters) may be evicted; set it to 'noeviction'"
        )
    return None
