"""Failed logins per client address, shared by every web process: the login throttle.

Each failed login (a wrong token at the console's login form or on the admin API) counts
against the client address it came from, in ``relay:logins:<address>``; the count lives
:data:`WINDOW` seconds from the first failure. The :data:`LIMIT`-th failure within that
window starts a cooling-off of :data:`COOLDOWN` seconds, during which every login from
the address is refused without looking at the token (the right one too: a guess that
happens to be right must not be told apart from the others). Attempts refused while
cooling off do not count, so the cooling-off ends when it said it would.
"""

from __future__ import annotations

import redis

from relay.state import keys

LIMIT = 10  #: failed logins from one address that start a cooling-off
WINDOW = 60.0  #: seconds from an address's first failed login in which they count
COOLDOWN = 60.0  #: seconds an address is refused after its LIMIT-th failed login

#: KEYS: the address's key; ARGV: window ms, limit, cooldown ms. Returns the failures so far.
_FAILED = """
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if failures == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return failures
"""

#: KEYS: the address's key; ARGV: limit, cooldown ms. Returns the ms of cooling-off left
#: (0: none).
_COOLING = """
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
if failures < tonumber(ARGV[1]) then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(ARGV[2])
end
return left
"""


class LoginThrottle:
    """Counts failed logins per client address (``relay:logins:<address>``)."""

    def __init__(
        self,
        client: redis.Redis,
        limit: int = LIMIT,
        window: float = WINDOW,
        cooldown: float = COOLDOWN,
    ) -> None:
        self.limit = limit
        self._window_ms = int(window * 1000)
        self._cooldown_ms = int(cooldown * 1000)
        self._failed = client.register_script(_FAILED)
        self._cooling = client.register_script(_COOLING)

    def cooling_off(self, address: str) -> float:
        """Seconds until ``address`` may log in again; 0 when it may now."""
        left = self._cooling(keys=[keys.logins(address)], args=[self.limit, self._cooldown_ms])
        return int(left) / 1000

    def failed(self, address: str) -> int:
        """Count a failed login from ``address``; how many it has made in its window."""
        args = [self._window_ms, self.limit, self._cooldown_ms]
        return int(self._failed(keys=[keys.logins(address)], args=args))
