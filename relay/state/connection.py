"""Opening relay's Redis: one server, or the primary that Sentinels name, and following
it when it fails over.

- **Sentinel** (``redis+sentinel://``, :mod:`relay.redis_url`): redis-py's
  ``Sentinel.master_for``. Each new connection asks the Sentinels for the primary; a
  connection that meets ``READONLY`` (its server was demoted) is dropped, and the pool
  drops its idle connections once the Sentinels name another primary.
- **One server** (``redis://``, ``rediss://``): a managed endpoint (ElastiCache,
  Memorystore, Azure) moves its address to the new primary, but connections made before
  still reach the old one, now a replica. A connection that meets ``READONLY`` or
  ``MASTERDOWN`` is dropped, with every idle connection of its pool, so the next call
  connects afresh, to the new primary.

Either way the call that met the failover fails (the web answers 503, a worker pauses and
tries again), and the next one follows the primary. No command is ever sent twice by the
client (redis-py's own retries are off): a script or transaction that timed out may or may
not have run, and relay's callers treat it as unknown, never as failed.
"""

from __future__ import annotations

import weakref
from typing import Any

import redis
from redis.connection import ConnectionPool, parse_url
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from relay.errors import SettingsError
from relay.redis_url import SentinelURL, is_sentinel, parse_sentinel_url

HEALTH_CHECK_INTERVAL = 30  #: seconds a pooled connection may idle before a PING


#: in the error of a script that wrote on a replica (Redis 6: "Error running script (call
#: to f_…): @user_script:1: … -READONLY You can't write against a read only replica.")
SCRIPT_READONLY = "-READONLY "


def demoted(exc: redis.ResponseError) -> bool:
    """True when ``exc`` says the server is no longer the primary: ``READONLY`` (a write,
    or from Redis 7 a script's), a script's write refused by a replica (Redis 6), or
    ``MASTERDOWN``."""
    return isinstance(exc, redis.ReadOnlyError | redis.exceptions.MasterDownError) or (
        SCRIPT_READONLY in str(exc)
    )


class _PoolRef:
    """How a connection reaches its pool (set once the pool exists)."""

    pool: weakref.ReferenceType[ConnectionPool] | None = None


class _FollowsPrimary:
    """A connection that gives up on a demoted server (mixed into redis-py's classes)."""

    def __init__(self, *args: Any, pool_ref: _PoolRef, **kwargs: Any) -> None:
        self._pool_ref = pool_ref
        super().__init__(*args, **kwargs)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ResponseError as exc:
            if not demoted(exc):
                raise
            self.disconnect()  # type: ignore[attr-defined]
            pool = self._pool_ref.pool() if self._pool_ref.pool else None
            if pool is not None:
                pool.disconnect(inuse_connections=False)
            reply = (
                "MASTERDOWN" if isinstance(exc, redis.exceptions.MasterDownError) else "READONLY"
            )
            raise redis.ConnectionError(
                f"{reply}: the server is no longer the primary (a failover); reconnecting"
            ) from exc


class FollowingConnection(_FollowsPrimary, redis.Connection):
    pass


class FollowingSSLConnection(_FollowsPrimary, redis.SSLConnection):
    pass


_FOLLOWING = {redis.Connection: FollowingConnection, redis.SSLConnection: FollowingSSLConnection}


def connect(url: str, timeout: float = 1.5, sentinel_password: str | None = None) -> redis.Redis:
    """A client of the primary at ``url`` whose every call gives up after ``timeout``
    seconds."""
    if is_sentinel(url):
        return _primary_of(parse_sentinel_url(url), timeout, sentinel_password)
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    connection_class = options.pop("connection_class", redis.Connection)
    following = _FOLLOWING.get(connection_class)
    ref = _PoolRef()
    extra: dict[str, Any] = {"pool_ref": ref} if following else {}
    pool = ConnectionPool(
        connection_class=following or connection_class,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        decode_responses=True,
        retry=None,
        **extra,
        **options,
    )
    ref.pool = weakref.ref(pool)
    return redis.Redis.from_pool(pool)  # the client owns the pool: closing it closes both


def sentinels(address: SentinelURL, timeout: float, password: str | None) -> Sentinel:
    """redis-py's view of the Sentinels of ``address`` (no data connection yet)."""
    sentinel_options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "password": password,
        "ssl": address.tls,
        "retry": None,
    }
    return Sentinel(  # type: ignore[no-untyped-call]
        list(address.sentinels),
        sentinel_kwargs=sentinel_options,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        decode_responses=True,
        username=address.username,
        password=address.password,
        db=address.db,
        ssl=address.tls,
        retry=None,
    )


class _SentinelFollowsPrimary:
    """redis-py's Sentinel connection drops itself on ``READONLY``; this one also on a
    script's write refused by a demoted primary (Redis 6 wraps that ``READONLY`` in the
    script's error), which would otherwise keep it on the old server."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.ResponseError as exc:
            if isinstance(exc, redis.ReadOnlyError) or not demoted(exc):
                raise
            self.disconnect()  # type: ignore[attr-defined]
            raise redis.ConnectionError(
                "READONLY: the server is no longer the primary (a failover); reconnecting"
            ) from exc


class FollowingSentinelConnection(_SentinelFollowsPrimary, SentinelManagedConnection):
    pass


class FollowingSentinelSSLConnection(_SentinelFollowsPrimary, SentinelManagedSSLConnection):
    pass


def _primary_of(address: SentinelURL, timeout: float, password: str | None) -> redis.Redis:
    manager = sentinels(address, timeout, password)
    connection_class = (
        FollowingSentinelSSLConnection if address.tls else FollowingSentinelConnection
    )
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
        address.service, connection_class=connection_class
    )
    return client


def check_service(url: str, timeout: float, sentinel_password: str | None = None) -> None:
    """For a Sentinel URL: SettingsError when the Sentinels that answer do not know its
    service (a typo would otherwise look like an outage forever). Nothing when none
    answers: that is an outage, reported as one."""
    if not is_sentinel(url):
        return
    address = parse_sentinel_url(url)
    known: set[str] = set()
    answered = False
    for sentinel in sentinels(address, timeout, sentinel_password).sentinels:
        try:
            masters: Any = sentinel.sentinel_masters()
            known.update(masters)
            answered = True
        except redis.AuthenticationError as exc:
            raise SettingsError(
                "RELAY_REDIS_SENTINEL_PASSWORD",
                f"refused by the Sentinel at {_where(sentinel)} ({exc})",
            ) from None
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "AUTH" in str(exc).upper():
                raise SettingsError(
                    "RELAY_REDIS_SENTINEL_PASSWORD",
                    f"the Sentinel at {_where(sentinel)} wants a password ({exc})",
                ) from None
            raise
        except redis.RedisError:
            continue
        finally:
            sentinel.close()
    if answered and address.service not in known:
        names = ", ".join(sorted(known)) or "none"
        raise SettingsError(
            "RELAY_REDIS_URL",
            f"no Sentinel of {address.without_secrets()} monitors a service named "
            f"{address.service!r} (they monitor: {names})",
        )


def _where(client: redis.Redis) -> str:
    options = client.connection_pool.connection_kwargs
    return f"{options.get('host')}:{options.get('port')}"
