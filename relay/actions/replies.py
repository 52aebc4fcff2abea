"""Auto-reply safety (DESIGN §8): opt-out keywords, cooldowns, never to ourselves.

- STOP-class keywords mark the sender opted out and START/UNSTOP/YES clear it, before the
  event is matched, so rules and templates see ``event.sender_opted_out`` as it now is
  (a STOP message sees ``true``: answer it with one confirmation from a destination that
  says ``to_opted_out: true``). Opt-outs are kept per sender number, without expiry.
- No reply goes to an opted-out number (unless ``to_opted_out: true``), to a short code
  (six digits or fewer), to a sender that is not a phone number, or to one of
  ``RELAY_OWN_NUMBERS``: loops between two auto-responders stop there.
- ``cooldown``: at most one reply per (sender, destination) per window. The window is
  claimed by the delivery that sends; its own retries keep it.
"""

from __future__ import annotations

from collections.abc import Set

import redis

from relay.events import INBOUND_MESSAGE
from relay.rules import SmsReplyDestination
from relay.settings import digits

OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
SHORT_CODE_MAX_DIGITS = 6

_PREFIX = "relay:"


class ReplyState:
    """Opt-outs and cooldown windows in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def opted_out(self, number: str) -> bool:
        return bool(self.redis.exists(f"{_PREFIX}optout:{digits(number)}"))

    def set_opted_out(self, number: str, opted_out: bool) -> None:
        key = f"{_PREFIX}optout:{digits(number)}"
        if opted_out:
            self.redis.set(key, "1")
        else:
            self.redis.delete(key)

    def claim_cooldown(self, destination: str, number: str, seconds: float, owner: str) -> bool:
        """True when ``owner`` (a delivery id) may reply now: the window is free or its own."""
        key = f"{_PREFIX}cooldown:{destination}:{digits(number)}"
        if self.redis.set(key, owner, nx=True, px=max(int(seconds * 1000), 1)):
            return True
        return self.redis.get(key) == owner

    def release_cooldown(self, destination: str, number: str, owner: str) -> None:
        """Give the window back when the claimed reply was never sent."""
        key = f"{_PREFIX}cooldown:{destination}:{digits(number)}"
        if self.redis.get(key) == owner:
            self.redis.delete(key)


def apply_opt_keywords(state: ReplyState, event: dict) -> None:
    """Update the sender's opt-out from the keyword; set ``event['sender_opted_out']``."""
    if event.get("kind") != INBOUND_MESSAGE or not digits(event.get("sender", "")):
        return
    keyword = event.get("keyword", "")
    if keyword in OPT_OUT_KEYWORDS or keyword in OPT_IN_KEYWORDS:
        state.set_opted_out(event["sender"], keyword in OPT_OUT_KEYWORDS)
        event["sender_opted_out"] = keyword in OPT_OUT_KEYWORDS
    else:
        event["sender_opted_out"] = state.opted_out(event["sender"])


def skip_reason(
    destination: SmsReplyDestination, event: dict, own_numbers: Set[str], state: ReplyState
) -> str | None:
    """Why this reply must not be sent, or None (cooldown is claimed separately)."""
    if event.get("kind") != INBOUND_MESSAGE:
        return "not an inbound message"
    sender = str(event.get("sender", ""))
    number = digits(sender)
    if not number or any(ch.isalpha() for ch in sender):
        return "sender is not a phone number"
    if len(number) <= SHORT_CODE_MAX_DIGITS:
        return "sender is a short code"
    if number in own_numbers:
        return "sender is one of our own numbers"
    if not destination.to_opted_out and state.opted_out(sender):
        return "sender opted out"
    return None
