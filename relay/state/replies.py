"""Auto-reply state in Redis: which senders opted out, and who holds a reply window.

Opt-outs are kept per sender number (its digits), without expiry, as ``1|<order>`` (opted
out) or ``0|<order>`` (opted in again), where ``order`` says which message decided: a
message older than the one that decided last changes nothing, whatever order the
messages are processed in. A cooldown window is a
key per (destination, sender number) holding the delivery id that claimed it, expiring
with the window. The rules that use them are in :mod:`relay.rules.replies` (for which
:class:`ReplyState` is the :class:`relay.rules.replies.OptOuts` of the worker), applied by
:mod:`relay.worker.replies` (see config/README.md: ``sms_reply``).
"""

from __future__ import annotations

import redis

from relay.settings import digits
from relay.state import keys

#: KEYS: the number's opt-out key; ARGV: "1" (out) or "0" (in), the deciding message's
#: order. Returns the state in force afterwards ("1" or "0").
_DECIDE = """
local current = redis.call('GET', KEYS[1])
if current then
  local order = string.match(current, '|(.*)$') or ''
  if order >= ARGV[2] then return string.sub(current, 1, 1) end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2])
return ARGV[1]
"""


class ReplyState:
    """Opt-outs and cooldown windows (keys ``relay:optout:*`` and ``relay:cooldown:*``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._decide = client.register_script(_DECIDE)

    def opted_out(self, number: str) -> bool:
        """True when ``number`` (any spelling: only its digits count) has opted out."""
        value = self.redis.get(keys.optout(digits(number)))
        return bool(value) and str(value).startswith("1")

    def set_opted_out(self, number: str, opted_out: bool, order: str = "") -> bool:
        """Record an opt-out (or opt-in) decided by a message of ``order`` (sortable text:
        its own time, then its arrival); a message ordered before the last decision
        changes nothing. Returns whether the number is opted out afterwards."""
        state = self._decide(
            keys=[keys.optout(digits(number))], args=["1" if opted_out else "0", order]
        )
        return str(state) == "1"

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
