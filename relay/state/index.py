"""The event search indexes: time-ordered sets of event ids per facet value, and each
event's settlement (what its search ``state`` is).

Written by the worker, never on the ingest path: the routing call (``Store.route``, one
Lua call per event) adds the event to ``relay:idx:all`` and to one sorted set per facet
value (:func:`event_facets`), scored by the event's accept time in milliseconds, and
starts its settlement hash ``relay:track:<id>``. Every transaction that ends or reopens
a delivery (:mod:`relay.state.deliveries`, a replay, a re-route) runs :data:`_SETTLE`
inside it, which moves the event between the ``state`` sets:

- ``pending``   — some delivery (or the routing) is not settled yet;
- ``delivered`` — every delivery ended delivered or skipped;
- ``dead``      — a delivery (or the routing) is dead-lettered; it wins over the others
  and lasts until a replay reopens it (back to ``pending``);
- ``unrouted``  — no route matched (no delivery at all).

Orthogonally, ``relay:idx:retrying`` holds the events with a retry scheduled (for the
console's overview). Every set is trimmed of entries older than the history TTL on each
write to it (``ZREMRANGEBYSCORE``, O(log n) when there is nothing to drop) and expires a
history TTL after its last write, so the indexes hold what history holds.

Facet values are capped at :data:`MAX_VALUE` characters and normalised the way the rules
compare them (``kind`` and ``keyword`` case-insensitively, ``status`` also without ``-``,
``_`` and spaces): a query normalises its values the same way (:func:`normalize`).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from relay.events import Event
from relay.state import keys
from relay.state.client import texts
from relay.times import epoch

#: the facets an event is indexed under, in the order the API lists them
FACETS = ("kind", "status", "code", "source", "route", "destination", "state", "keyword")
#: the search states of an event
STATES = ("pending", "delivered", "dead", "unrouted")
#: the longest facet value kept (longer ones are cut; queries are cut the same way)
MAX_VALUE = 100
#: set entries one search call walks before it answers (keeps each Lua call short)
SCAN_BUDGET = 5000

_STATUS_NOISE = str.maketrans("", "", "-_ ")
#: a delivery's value in the settlement hash
OPEN, RETRY, DONE, DEAD = "open", "retry", "done", "dead"

#: KEYS: the settlement hash; ARGV: event id, key prefix, ttl s, oldest score kept (ms),
#: then pairs of field, value to set first. Fields starting with '@' are the event's own
#: (@at: its score, @state: its state set); the others are delivery ids → open, retry,
#: done or dead. Moves the event between the state sets; returns its state ('' unknown).
_SETTLE = """
local track = KEYS[1]
if redis.call('EXISTS', track) == 0 then return '' end
local id, p, ttl, cutoff = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
for i = 5, #ARGV, 2 do redis.call('HSET', track, ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', track, ttl)
local fields = redis.call('HGETALL', track)
local score, old, open, retry, dead, any = nil, nil, false, false, false, false
for j = 1, #fields, 2 do
  local f, v = fields[j], fields[j + 1]
  if f == '@at' then score = v
  elseif f == '@state' then old = v
  elseif string.sub(f, 1, 1) ~= '@' then
    any = true
    if v == 'dead' then dead = true
    elseif v == 'retry' then retry = true; open = true
    elseif v == 'open' then open = true end
  end
end
if not score then return '' end
local new = 'unrouted'
if dead then new = 'dead' elseif open then new = 'pending' elseif any then new = 'delivered' end
local function add(key)
  redis.call('ZADD', key, score, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cutoff)
  redis.call('EXPIRE', key, ttl)
end
if new ~= old then
  if old then redis.call('ZREM', p .. 'idx:state:' .. old, id) end
  add(p .. 'idx:state:' .. new)
  redis.call('HSET', track, '@state', new)
end
if retry and not dead then add(p .. 'idx:retrying')
else redis.call('ZREM', p .. 'idx:retrying', id) end
return new
"""

#: KEYS: the sets to intersect, the one walked first; ARGV: highest score (ms, inclusive),
#: lowest score (ms, inclusive), after id ('': none; entries at the highest score with an
#: id >= it are skipped), how many matches are wanted, how many entries to walk at most.
#: Returns {walked_all (0/1), last walked id, last walked score, id, score, id, score, …}.
_SEARCH = """
local top, bottom, after = ARGV[1], ARGV[2], ARGV[3]
local want, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local out, found, walked, offset = {}, 0, 0, 0
local last_id, last_score = '', ''
local batch = math.min(budget, math.max(want * 4, 200))
while found < want and walked < budget do
  local chunk = redis.call('ZRANGE', KEYS[1], top, bottom, 'BYSCORE', 'REV',
    'LIMIT', offset, batch, 'WITHSCORES')
  if #chunk == 0 then return {1, last_id, last_score, unpack(out)} end
  offset = offset + #chunk / 2
  for j = 1, #chunk, 2 do
    local id, score = chunk[j], chunk[j + 1]
    walked = walked + 1
    last_id, last_score = id, score
    if not (after ~= '' and score == top and id >= after) then
      local keep = true
      for k = 2, #KEYS do
        if not redis.call('ZSCORE', KEYS[k], id) then keep = false; break end
      end
      if keep then
        out[#out + 1] = id; out[#out + 1] = score; found = found + 1
        if found >= want then return {0, last_id, last_score, unpack(out)} end
      end
    end
    if walked >= budget then return {0, last_id, last_score, unpack(out)} end
  end
  if #chunk / 2 < batch then return {1, last_id, last_score, unpack(out)} end
end
return {0, last_id, last_score, unpack(out)}
"""


def normalize(facet: str, value: str) -> str:
    """``value`` as the index of ``facet`` keeps it (and a query must ask for it)."""
    if facet in ("kind", "keyword"):
        value = value.casefold()
    elif facet == "status":
        value = value.casefold().translate(_STATUS_NOISE)
    return value[:MAX_VALUE]


def event_facets(
    event: Event, routes: Iterable[str], destinations: Iterable[str]
) -> list[tuple[str, str]]:
    """The (facet, value) pairs ``event`` is indexed under, ``state`` apart: its kind, a
    receipt's status and code, its source, each route it matched and destination it goes
    to, and an inbound message's keyword (first word of the text, upper-cased)."""
    pairs: list[tuple[str, str]] = []
    for facet in ("kind", "status", "code", "source", "keyword"):
        value = event.get(facet)
        if isinstance(value, str) and value:
            pairs.append((facet, normalize(facet, value)))
    pairs += [("route", normalize("route", name)) for name in dict.fromkeys(routes)]
    pairs += [("destination", normalize("destination", n)) for n in dict.fromkeys(destinations)]
    return pairs


def accept_score(event: Event) -> int:
    """The event's accept time (``received_at``, set by the web process as it accepted it)
    in milliseconds since the epoch; 0 when it does not parse (none should)."""
    received = epoch(event.get("received_at"))
    return int(received * 1000) if received is not None else 0


def encode_cursor(score: int, event_id: str) -> str:
    """An opaque cursor: the position (score, id) of the last entry a page covered."""
    return base64.urlsafe_b64encode(f"{score}:{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """(score, id) of a cursor; ValueError when it is not one this module made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, _, event_id = raw.partition(":")
        if not event_id or not keys.storable(event_id):
            raise ValueError
        return int(score), event_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor this server gave") from None


@dataclass(frozen=True)
class IndexPage:
    """A page of event ids, newest first: (id, accept time in epoch seconds) each, and the
    cursor of the next (older) page (None at the end)."""

    events: tuple[tuple[str, float], ...]
    next_cursor: str | None

    @property
    def ids(self) -> list[str]:
        return [event_id for event_id, _ in self.events]


class EventIndex:
    """Reading the indexes, and the settlement steps callers add to their transactions."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.redis = client
        self.ttl = max(int(ttl), 1)
        self._search = client.register_script(_SEARCH)

    def cutoff(self, now: float) -> int:
        """The oldest score (ms) the indexes keep at ``now``."""
        return int((now - self.ttl) * 1000)

    def settle(self, pipe: Any, event_id: str, fields: Mapping[str, str], now: float) -> None:
        """Add to ``pipe``: set the settlement ``fields`` (delivery id → open, retry, done,
        dead) of the event and move it to the state set they make."""
        args: list[Any] = [event_id, keys.PREFIX, self.ttl, self.cutoff(now)]
        for name, value in fields.items():
            args += [name, value]
        # EVAL with the text, not a registered script: redis-py asks SCRIPT EXISTS before
        # every transaction holding one, a round trip more per settled delivery; Redis finds
        # its compiled copy of the text by hash.
        pipe.eval(_SETTLE, 1, keys.track(event_id), *args)

    def settle_now(self, event_id: str, fields: Mapping[str, str], now: float) -> str:
        """:meth:`settle` on its own; the event's state ('' when it is not indexed)."""
        pipe = self.redis.pipeline(transaction=True)
        self.settle(pipe, event_id, fields, now)
        result = pipe.execute()[-1]
        return result.decode() if isinstance(result, bytes) else str(result)

    def state(self, event_id: str) -> str | None:
        value = self.redis.hget(keys.track(event_id), "@state")
        return value.decode() if isinstance(value, bytes) else value

    def tracks(self, event_ids: Sequence[str]) -> list[dict[str, str]]:
        """The settlement hash of each event ({} when gone)."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hgetall(keys.track(event_id))
        return [{_text(k): _text(v) for k, v in found.items()} for found in pipe.execute()]

    def page(
        self,
        facets: Mapping[str, str],
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
        now: float | None = None,
    ) -> IndexPage:
        """The newest ``limit`` events with every (facet, value) of ``facets`` (values as
        a user writes them: normalised here; none: every event), accepted from ``since``
        (inclusive) to ``until`` (exclusive, epoch seconds), after ``cursor`` (a page's
        ``next_cursor``). ValueError for an unknown facet or a cursor not made here.

        The smallest of the sets is walked newest first and each entry checked against the
        others (one short Lua call per :data:`SCAN_BUDGET` entries). The cursor is the
        position of the last event a page covered: events that arrive meanwhile are newer,
        so paging down neither skips nor repeats."""
        sets = self._sets(facets)
        if sets is None:
            return IndexPage((), None)  # text no key can hold (a lone surrogate): indexed never
        if len(sets) > 1:
            sizes = self._sizes(sets)
            sets = [key for _, key in sorted(zip(sizes, sets, strict=True))]
        now = time.time() if now is None else now
        bottom = max(self.cutoff(now), _ms(since) if since is not None else 0)
        top: int | str = _ms(until) - 1 if until is not None else "+inf"
        after = ""
        if cursor:
            score, after = decode_cursor(cursor)
            if isinstance(top, int) and top < score:
                after = ""  # the cursor lies past ``until``: start from ``until``
            else:
                top = score
        found: list[tuple[str, int]] = []
        exhausted = False
        while len(found) <= limit:
            done, last, hits = self._walk(sets, top, bottom, after, limit + 1 - len(found))
            found += hits
            if done or last is None:
                exhausted = True
                break
            top, after = last  # walked its budget: go on from the last entry it walked
        page = found[:limit]
        more = len(found) > limit or not exhausted
        next_cursor = encode_cursor(page[-1][1], page[-1][0]) if page and more else None
        return IndexPage(tuple((event_id, score / 1000) for event_id, score in page), next_cursor)

    def count(
        self,
        facets: Mapping[str, str],
        since: float | None = None,
        until: float | None = None,
        now: float | None = None,
    ) -> int:
        """How many events with the (facet, value) of ``facets`` (one at most; none: every
        event) were accepted from ``since`` (inclusive) to ``until`` (exclusive; default now
        and a minute of clock skew). ValueError for an unknown facet or two of them."""
        if len(facets) > 1:
            raise ValueError("an index count takes one facet at most")
        sets = self._sets(facets)
        return 0 if sets is None else self._count(sets[0], since, until, now)

    def count_retrying(
        self, since: float | None = None, until: float | None = None, now: float | None = None
    ) -> int:
        """:meth:`count` of the events with a retry scheduled now."""
        return self._count(keys.RETRYING, since, until, now)

    def _count(self, key: str, since: float | None, until: float | None, now: float | None) -> int:
        now = time.time() if now is None else now
        low = max(self.cutoff(now), _ms(since) if since is not None else 0)
        high = _ms(until) if until is not None else _ms(now + 60)
        return int(self.redis.zcount(key, low, f"({high}"))

    def _sets(self, facets: Mapping[str, str]) -> list[str] | None:
        """The index keys of ``facets`` (every event's for none); None when a value is text
        no key can hold."""
        for facet in facets:
            if facet not in FACETS:
                raise ValueError(f"no index of {facet!r}: one of {', '.join(FACETS)}")
        values = [(facet, normalize(facet, value)) for facet, value in facets.items()]
        if not all(keys.storable(value) for _, value in values):
            return None
        return [keys.index(facet, value) for facet, value in values] or [keys.INDEX_ALL]

    def _sizes(self, set_keys: Sequence[str]) -> list[int]:
        pipe = self.redis.pipeline(transaction=False)
        for key in set_keys:
            pipe.zcard(key)
        return [int(n) for n in pipe.execute()]

    def _walk(
        self,
        set_keys: Sequence[str],
        top: int | str,
        bottom: int,
        after: str,
        want: int,
        budget: int | None = None,
    ) -> tuple[bool, tuple[int, str] | None, list[tuple[str, int]]]:
        """Entries of ``set_keys[0]`` scored ``bottom``–``top`` (ms, inclusive), newest
        first, that every other set holds too; at the score ``top``, only ids below
        ``after`` (when given). Stops at ``want`` matches or ``budget`` entries walked.
        Returns (walked to the end, (score, id) of the last entry walked, matches)."""
        reply = self._search(
            keys=list(set_keys), args=[top, bottom, after, want, budget or SCAN_BUDGET]
        )
        flat = texts(reply[1:])
        done = int(reply[0]) == 1
        last = (int(float(flat[1])), flat[0]) if flat[0] else None
        found = [(flat[i], int(float(flat[i + 1]))) for i in range(2, len(flat), 2)]
        return done, last, found


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
