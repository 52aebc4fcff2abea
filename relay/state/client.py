"""The Redis connection: one way to open it, JSON in and out, errors made plain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from relay.errors import UnavailableError

#: what a Redis call raises when the server is away or answers too slowly
Unavailable = (redis.ConnectionError, redis.TimeoutError)
RedisError = redis.RedisError


def connect(url: str, timeout: float = 1.5) -> redis.Redis:
    """A client whose every call gives up after ``timeout`` seconds."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=True,
    )


def dumps(value: object) -> str:
    """JSON with ``ensure_ascii=True``, so any text a sender manages to put in a payload
    (lone surrogates included) can be stored and read back."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def loads(raw: str | bytes) -> Any:
    return json.loads(raw)


def texts(reply: Any) -> list[str]:
    """The members of a list reply as text (the client decodes responses)."""
    return [item if isinstance(item, str) else item.decode() for item in reply]


@contextmanager
def unavailable_on_error() -> Iterator[None]:
    """Turns a Redis connection problem or timeout into UnavailableError."""
    try:
        yield
    except Unavailable as exc:
        raise UnavailableError(f"redis: {exc}") from exc


def check(client: redis.Redis) -> str:
    """``ok``, or why not (for readiness)."""
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"error: {exc}"
    return "ok"


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
