"""Auto-reply state in Redis: which senders opted out, and who holds a reply window.

Opt-outs are kept per sender number (its digits), without expiry. A cooldown window is a
key per (destination, sender number) holding the delivery id that claimed it, expiring
with the window. The rules that use them are :func:`relay.actions.sms.apply_opt_keywords`
and :func:`relay.actions.sms.skip_reason` (see config/README.md: ``sms_reply``).
"""

from __future__ import annotations

import redis

from relay.settings import digits
from relay.state import keys


class ReplyState:
    """Opt-outs and cooldown windows (keys ``relay:optout:*`` and ``relay:cooldown:*``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def opted_out(self, number: str) -> bool:
        """True when ``number`` (any spelling: only its digits count) has opted out."""
        return bool(self.redis.exists(keys.optout(digits(number))))

    def set_opted_out(self, number: str, opted_out: bool) -> None:
        key = keys.optout(digits(number))
        if opted_out:
            self.redis.set(key, "1")
        else:
            self.redis.delete(key)

    def claim_cooldown(self, destination: str, number: str, seconds: float, owner: str) -> bool:
        """True when ``owner`` (a delivery id) may reply now: the window is free or its own."""
        key = keys.cooldown(destination, digits(number))
        if self.redis.set(key, owner, nx=True, px=max(int(seconds * 1000), 1)):
            return True
        return self.redis.get(key) == owner

    def release_cooldown(self, destination: str, number: str, owner: str) -> None:
        """Give the window back when the claimed reply was never sent."""
        key = keys.cooldown(destination, digits(number))
        if self.redis.get(key) == owner:
            self.redis.delete(key)
