"""kombu's Redis transports (one server, or Sentinels), with one redis-py client per
channel instead of one per call.

kombu's Redis channel builds a new ``redis.Redis`` object for every publish (and every
other synchronous command); constructing one (its response-callback table) is about 40%
of the cost of publishing a small task. This subclass keeps one client per channel and
connection pool — redis-py clients over a pool are thread-safe — and changes nothing
else. It is selected through Celery's documented ``broker_transport`` setting when the
broker is Redis (see ``relay.ops.broker``): :class:`Transport` for one server,
:class:`SentinelTransport` for ``sentinel://`` URLs (the primary the Sentinels name).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, with one synchronous client per connection pool."""

    _relay_client = None
    _relay_client_pool = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        if self._relay_client is None or self._relay_client_pool is not pool:
            self._relay_client = super()._create_client()  # type: ignore[no-untyped-call]
            self._relay_client_pool = pool
        return self._relay_client


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (it asks the Sentinels for the primary), with
    :class:`Channel`'s client cache."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
