"""Auto-reply rules: which messages opt their sender out (or back in), and when a reply
must not go out (config/README.md: ``sms_reply``).

One policy for the worker, the dry run and rule cases, each calling it at the same points:

- before matching, :func:`apply_opt_keywords` reads the message and sets the event's
  ``sender_opted_out`` (as it is after this message) and ``opt_out_ambiguous``: a message
  that is, or begins with, an opt-out (opt-in) word decides; one that only contains an
  opt-out word further on (``please stop texting me``) decides nothing and is ambiguous.
  The later message wins, by its own time (:func:`message_order`);
- before an attempt, :func:`skip_reason`: no reply to an opted-out number (unless the
  destination says ``to_opted_out``), to a short code, to a sender that is not a phone
  number or to one of our own numbers (loops between two auto-responders stop there).

Where the decisions are kept is the caller's: :class:`OptOuts` is what the rules need of it.
The worker's is Redis (:class:`relay.state.replies.ReplyState`, through
:mod:`relay.worker.replies`, which also keeps the cooldowns); dry runs and rule cases use
:class:`SimulatedOptOuts`, which starts with nobody opted out and remembers what the
messages of one run decide.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Protocol

from relay.events import INBOUND_MESSAGE, Event
from relay.rules.model import SmsReplyDestination
from relay.settings import Settings, digits
from relay.times import epoch

#: messages that opt a number out, as :func:`opt_words` normalises them (CTIA's list, the
#: FCC's 2024 revocation words, their spaced and hyphenated forms, common short forms, and
#: the French ARRET used in Canada); RELAY_OPT_OUT_KEYWORDS adds more
OPT_OUT_KEYWORDS = frozenset(
    {
        "STOP",
        "STOPALL",
        "STOP ALL",
        "UNSUBSCRIBE",
        "UNSUB",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
        "OPT OUT",
        "ARRET",
    }
)
#: messages that opt a number back in; RELAY_OPT_IN_KEYWORDS adds more
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})

#: digits; a sender this short is a short code, never replied to
SHORT_CODE_MAX_DIGITS = 6


@dataclass(frozen=True)
class OptWords:
    """The words and phrases that opt a number out and back in (as :func:`opt_words`)."""

    out: frozenset[str] = OPT_OUT_KEYWORDS
    back_in: frozenset[str] = OPT_IN_KEYWORDS

    @classmethod
    def of(cls, settings: Settings) -> OptWords:
        """The built-in words plus RELAY_OPT_OUT_KEYWORDS and RELAY_OPT_IN_KEYWORDS."""
        return cls(
            OPT_OUT_KEYWORDS | settings.opt_out_words, OPT_IN_KEYWORDS | settings.opt_in_words
        )


#: the built-in words alone
DEFAULT_WORDS = OptWords()


class OptOuts(Protocol):
    """Where opt-outs are kept, per number (any spelling: only its digits count)."""

    def opted_out(self, number: str) -> bool:
        """True when ``number`` has opted out."""
        ...

    def set_opted_out(self, number: str, opted_out: bool, order: str = "") -> bool:
        """Record a decision of a message of ``order`` (:func:`message_order`), unless a
        message ordered later decided already; whether the number is opted out after."""
        ...


class SimulatedOptOuts:
    """Opt-outs in memory for a dry run or a rule case: nobody is opted out at first; what
    the run's messages decide counts for the messages after them, ordered as in Redis."""

    def __init__(self) -> None:
        self._decided: dict[str, tuple[bool, str]] = {}

    def opted_out(self, number: str) -> bool:
        return self._decided.get(digits(number), (False, ""))[0]

    def set_opted_out(self, number: str, opted_out: bool, order: str = "") -> bool:
        key = digits(number)
        current = self._decided.get(key)
        if current is None or current[1] < order:
            self._decided[key] = (opted_out, order)
        return self._decided[key][0]


def apply_opt_keywords(optouts: OptOuts, event: Event, words: OptWords = DEFAULT_WORDS) -> None:
    """Before matching: record the opt-out (or opt-in) an inbound message decides in
    ``optouts``; set ``event['sender_opted_out']`` as it is now, and
    ``event['opt_out_ambiguous']`` when the message only contains an opt-out word.
    Other events, and messages from a sender without digits, are left as they are."""
    if event.get("kind") != INBOUND_MESSAGE or not digits(event.get("sender", "")):
        return
    text = opt_words(event.get("text") or event.get("keyword", ""))
    decided = _decision(text, words)
    if decided is not None:
        event["sender_opted_out"] = optouts.set_opted_out(
            event["sender"], decided, message_order(event)
        )
        return
    event["sender_opted_out"] = optouts.opted_out(event["sender"])
    if any(_contains(text, word) for word in words.out):
        event["opt_out_ambiguous"] = True


def opt_words(text: str) -> str:
    """A message as opt-out words are compared: full-width letters made plain, accents
    dropped, upper case, punctuation and hyphens as spaces, one space between words."""
    plain = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    letters = "".join(ch for ch in plain if not unicodedata.combining(ch)).upper()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in letters).split())


def _decision(text: str, words: OptWords) -> bool | None:
    """True (opt out) or False (opt in) when the message is such a word or phrase, or
    begins with one (``STOP please``); else None."""
    for phrases, verdict in ((words.out, True), (words.back_in, False)):
        if any(text == phrase or text.startswith(phrase + " ") for phrase in phrases):
            return verdict
    return None


def _contains(text: str, phrase: str) -> bool:
    return f" {phrase} " in f" {text} "


def message_order(event: Event) -> str:
    """Sortable text: the message's own time (UTC, ms), then its arrival (the event id,
    which sorts by arrival); a message without a readable time counts from its arrival.
    Times are read as everywhere else (:func:`relay.times.epoch`: ISO or Unix time)."""
    sent = epoch(event.get("timestamp")) or epoch(event.get("received_at"))
    return f"{int(sent * 1000) if sent else 0:015d}:{event.get('id', '')}"


def skip_reason(
    destination: SmsReplyDestination,
    event: Event,
    own_numbers: Set[str],
    opted_out: Callable[[str], bool],
) -> str | None:
    """Before an attempt: why this reply must not be sent, or None. ``opted_out`` asks the
    opt-outs in force (:meth:`OptOuts.opted_out`); the cooldown is the caller's."""
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
    if not destination.to_opted_out and opted_out(sender):
        return "sender opted out"
    return None
