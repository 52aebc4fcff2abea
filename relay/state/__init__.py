"""The only code that talks to Redis: keys, Lua scripts, the inbox, events and their
history, the pending outbox, delivery state, dead letters, opt-outs and cooldowns.

Everything else reaches Redis through a :class:`Store` made by :func:`open_store`.
"""

from relay.state.client import RedisError, eviction_warning, is_infrastructure, is_unavailable
from relay.state.connection import check_service, connect
from relay.state.store import Store, open_store, pending_grace

__all__ = [
    "RedisError",
    "Store",
    "check_service",
    "connect",
    "eviction_warning",
    "is_infrastructure",
    "is_unavailable",
    "open_store",
    "pending_grace",
]
