"""Destination controls shared by every worker: pause, circuit breaker, concurrency, rate.

All of it lives in Redis under ``relay:dest:<name>:…`` (see :mod:`relay.state.keys`), so
a pause or an open circuit is seen by every worker at once. Time is Redis's own clock
(``TIME`` inside the scripts), so workers with skewed clocks agree.

Before an attempt, :meth:`Controls.gate` checks in ONE Lua call, in this order, and
commits nothing unless every check passes:

1. **paused** — the destination's pause key exists (with an expiry for ``--for``);
2. **circuit** — open and its cooldown not over → wait; cooldown over (or a half-open
   probe whose lease ran out) → this attempt becomes THE probe: the circuit turns
   half-open and every other attempt waits until the probe's outcome;
3. **concurrency** — a sorted set of leases (delivery → expiry); expired leases are
   dropped first, so a worker killed mid-attempt frees its slot when the lease ends
   (the lease is the attempt's lock hold: its timeout plus a margin);
4. **rate limit** — a token bucket holding ONE token that refills every ``per / count``
   seconds (so ``10/s`` sends at most one every 100 ms: never more than ``count`` in a
   ``per`` window, plus one at its edge). A refused caller is told the wait until its own
   turn: refusals are handed consecutive slots (``hint``), so a crowd of waiters comes
   back spread out instead of all at once.

After the attempt, :meth:`Controls.settle` (one Lua call) frees the lease, keeps the
circuit's accounts and the rolling statistics (per-minute buckets kept 10 minutes); or
:meth:`Controls.settlement` gives the same call as a :class:`Settlement` to add to a
transaction of the caller's (a delivered attempt's, in :mod:`relay.state.deliveries`), so
it costs no round trip of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from relay.state import keys
from relay.state.client import dumps, loads, texts

#: upper bounds (seconds) of the latency buckets of the rolling statistics
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: seconds a per-minute statistics bucket is kept
STATS_TTL = 600
#: how many minutes the rolling statistics cover
STATS_MINUTES = 5

#: KEYS: paused, circuit, inflight, bucket, parked.
#: ARGV: member, lease seconds, rate interval (0: none), concurrency (0: none), breaker (1/0).
#: A member told to wait because of the pause or the circuit is parked in the same call, so
#: a resume (or a closing circuit) never misses one that was refused just before it; one
#: that goes leaves the parked set (a timed pause ends with no resume to empty it).
#: Returns {verdict, number as text}: {'go', '1' if probe else '0'} or {reason, wait seconds}
#: (a pause with no expiry: wait '-1').
_GATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = redis.call('PTTL', KEYS[1])
local member, hold = ARGV[1], tonumber(ARGV[2])
if ttl ~= -2 then
  redis.call('SADD', KEYS[5], member)
  if ttl == -1 then return {'paused', '-1'} end
  return {'paused', tostring(ttl / 1000)}
end
local probe = false
if ARGV[5] == '1' then
  local c = redis.call('HMGET', KEYS[2], 'state', 'until', 'probe_until')
  if c[1] == 'open' then
    local u = tonumber(c[2]) or 0
    if now < u then
      redis.call('SADD', KEYS[5], member)
      return {'circuit', tostring(u - now)}
    end
    probe = true
  elseif c[1] == 'half-open' then
    local pu = tonumber(c[3]) or 0
    if now < pu then
      redis.call('SADD', KEYS[5], member)
      return {'circuit', tostring(pu - now)}
    end
    probe = true
  end
end
local limit = tonumber(ARGV[4])
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if not redis.call('ZSCORE', KEYS[3], member) and redis.call('ZCARD', KEYS[3]) >= limit then
    local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {'concurrency', tostring(tonumber(first[2]) - now)}
  end
end
local interval = tonumber(ARGV[3])
if interval > 0 then
  local b = redis.call('HMGET', KEYS[4], 'tat', 'hint')
  local tat = tonumber(b[1]) or 0
  if tat > now then
    local slot = math.max(tonumber(b[2]) or 0, tat)
    redis.call('HSET', KEYS[4], 'hint', tostring(slot + interval))
    redis.call('PEXPIRE', KEYS[4], math.ceil((slot + interval - now) * 1000) + 1000)
    return {'rate_limit', tostring(slot - now)}
  end
  redis.call('HSET', KEYS[4], 'tat', tostring(now + interval))
  local hint = tonumber(b[2]) or 0
  redis.call('PEXPIRE', KEYS[4], math.ceil((math.max(hint, now + interval) - now) * 1000) + 1000)
end
redis.call('SREM', KEYS[5], member)
if limit > 0 then
  redis.call('ZADD', KEYS[3], now + hold, member)
  redis.call('PEXPIRE', KEYS[3], math.ceil(hold * 1000) + 1000)
end
if probe then
  redis.call('HSET', KEYS[2], 'state', 'half-open', 'probe', member,
    'probe_until', tostring(now + hold), 'changed', tostring(now))
  return {'go', '1'}
end
return {'go', '0'}
"""

#: KEYS: circuit, inflight, stats bucket of this minute, last error, the known set.
#: ARGV: member, outcome (ok|transient|permanent), breaker failures (0: none), cooldown s,
#:   latency bucket index, error JSON ('' for none), stats ttl s, error ttl s, name.
#: Returns the circuit's transition: 'opened', 'reopened', 'closed' or ''.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local member, outcome = ARGV[1], ARGV[2]
local failures, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREM', KEYS[2], member)
redis.call('HINCRBY', KEYS[3], outcome == 'ok' and 'ok' or 'failed', 1)
redis.call('HINCRBY', KEYS[3], 'l' .. ARGV[5], 1)
redis.call('EXPIRE', KEYS[3], ARGV[7])
if ARGV[6] ~= '' then redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[8]) end
local c = redis.call('HMGET', KEYS[1], 'state', 'probe')
local state = c[1] or 'closed'
if state ~= 'closed' then
  if c[2] ~= member then return '' end
  redis.call('SADD', KEYS[5], ARGV[9])
  if outcome == 'transient' and failures > 0 then
    redis.call('HSET', KEYS[1], 'state', 'open', 'until', tostring(now + cooldown),
      'probe', '', 'probe_until', '0', 'changed', tostring(now))
    return 'reopened'
  end
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', '0', 'probe', '',
    'probe_until', '0', 'changed', tostring(now))
  return 'closed'
end
if outcome == 'transient' then
  if failures <= 0 then return '' end
  local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  if n >= failures then
    redis.call('SADD', KEYS[5], ARGV[9])
    redis.call('HSET', KEYS[1], 'state', 'open', 'until', tostring(now + cooldown),
      'probe', '', 'changed', tostring(now))
    return 'opened'
  end
  return ''
end
if redis.call('HEXISTS', KEYS[1], 'failures') == 1 then
  redis.call('HSET', KEYS[1], 'failures', '0')
end
return ''
"""

#: KEYS: parked set, pending hash. Returns member, task, member, task, … of the parked
#: deliveries still pending; the parked set is emptied.
_UNPARK = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
local out = {}
for _, member in ipairs(members) do
  local spec = redis.call('HGET', KEYS[2], member)
  if spec then
    out[#out + 1] = member
    out[#out + 1] = spec
  end
end
return out
"""


@dataclass(frozen=True)
class Verdict:
    """What the gate said: ``reason`` is ``go`` or why the attempt must wait
    (``paused``, ``circuit``, ``concurrency``, ``rate_limit``); ``wait``: seconds until it
    may try again (``None``: paused with no end); ``probe``: this attempt is the half-open
    circuit's one probe."""

    reason: str
    wait: float | None = 0.0
    probe: bool = False

    @property
    def go(self) -> bool:
        return self.reason == "go"


@dataclass(frozen=True)
class Circuit:
    """A circuit's state: ``closed``, ``open`` or ``half-open``; consecutive transient
    ``failures``; ``until``: when an open circuit lets its probe through (epoch seconds)."""

    state: str = "closed"
    failures: int = 0
    until: float | None = None


@dataclass(frozen=True)
class Pause:
    """A destination's pause: ``since`` and ``until`` (None: until resumed), epoch seconds."""

    since: float
    until: float | None


@dataclass(frozen=True)
class Stats:
    """Attempts over the last few minutes: how many, how many succeeded, and the 95th
    percentile of their latency (the upper bound of its bucket of
    :data:`LATENCY_BOUNDS`; None with no attempt)."""

    attempts: int = 0
    succeeded: int = 0
    p95: float | None = None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.attempts if self.attempts else None


@dataclass(frozen=True)
class Settlement:
    """An attempt's outcome for the controls (:meth:`Controls.settlement`), to run inside
    a transaction of the caller's: :meth:`stage` adds it to the pipeline, and the
    transaction's result at that place, given to :meth:`transition`, is the circuit's
    transition."""

    keys: tuple[str, ...]
    args: tuple[Any, ...]

    def stage(self, pipe: Any) -> None:
        # EVAL with the text: a script registered on a redis-py pipeline would cost a
        # SCRIPT EXISTS round trip before the transaction (see relay.state.index.settle)
        pipe.eval(_SETTLE, len(self.keys), *self.keys, *self.args)

    @staticmethod
    def transition(result: object) -> str:
        return result.decode() if isinstance(result, bytes) else str(result or "")


class Controls:
    def __init__(self, client: redis.Redis, error_ttl: float = 7 * 86400.0) -> None:
        self.redis = client
        self.error_ttl = max(int(error_ttl), 1)
        self._gate = client.register_script(_GATE)
        self._settle = client.register_script(_SETTLE)
        self._unpark = client.register_script(_UNPARK)

    # -- the worker's side ------------------------------------------------------------------

    def gate(
        self,
        name: str,
        delivery_id: str,
        lease: float,
        *,
        rate: tuple[int, float] | None = None,
        concurrency: int | None = None,
        breaker: bool = False,
    ) -> Verdict:
        """May the delivery ``delivery_id`` make an attempt at ``name`` now? On ``go`` it holds a
        concurrency lease of ``lease`` seconds (with a ``concurrency`` limit) and has taken
        a token (with a ``rate`` of (count, per seconds)). Refused because of the pause or
        the circuit, it is parked (see :meth:`unpark`)."""
        interval = rate[1] / rate[0] if rate and rate[0] > 0 else 0.0
        reason, number = texts(
            self._gate(
                keys=[
                    keys.destination(name, "paused"),
                    keys.destination(name, "circuit"),
                    keys.destination(name, "inflight"),
                    keys.destination(name, "bucket"),
                    keys.destination(name, "parked"),
                ],
                args=[
                    keys.deliver_member(delivery_id),
                    repr(lease),
                    repr(interval),
                    concurrency or 0,
                    int(breaker),
                ],
            )
        )
        if reason == "go":
            return Verdict("go", 0.0, probe=number == "1")
        wait = float(number)
        return Verdict(reason, None if wait < 0 else max(wait, 0.0))

    def settle(
        self,
        name: str,
        delivery_id: str,
        outcome: str,
        latency: float,
        error: str | None = None,
        *,
        failures: int = 0,
        cooldown: float = 0.0,
    ) -> str:
        """An attempt ended (``outcome``: ``ok``, ``transient`` or ``permanent``): free its
        lease, count it in the statistics, keep the last error and the circuit's accounts.
        Returns the circuit's transition: ``opened``, ``reopened`` (a probe failed),
        ``closed`` or ``""``.

        Only the probe's outcome moves a circuit that is not closed: an attempt that was
        already under way when the circuit opened changes nothing."""
        return self.apply(
            self.settlement(
                name, delivery_id, outcome, latency, error, failures=failures, cooldown=cooldown
            )
        )

    def apply(self, settlement: Settlement) -> str:
        """Run ``settlement`` (:meth:`settlement`) on its own: one Lua call."""
        return Settlement.transition(self._settle(keys=settlement.keys, args=settlement.args))

    def settlement(
        self,
        name: str,
        delivery_id: str,
        outcome: str,
        latency: float,
        error: str | None = None,
        *,
        failures: int = 0,
        cooldown: float = 0.0,
    ) -> Settlement:
        """:meth:`settle`'s call, not run: for the caller's own transaction."""
        now = time.time()
        minute = int(now // 60)
        bucket = next((i for i, b in enumerate(LATENCY_BOUNDS) if latency <= b), None)
        index = len(LATENCY_BOUNDS) if bucket is None else bucket
        last = dumps({"at": now, "error": error}) if error else ""
        return Settlement(
            keys=(
                keys.destination(name, "circuit"),
                keys.destination(name, "inflight"),
                keys.destination(name, f"stats:{minute}"),
                keys.destination(name, "error"),
                keys.CONTROLLED,
            ),
            args=(
                keys.deliver_member(delivery_id),
                outcome,
                failures,
                repr(cooldown),
                index,
                last,
                STATS_TTL,
                self.error_ttl,
                name,
            ),
        )

    def release(self, name: str, delivery_id: str) -> None:
        """Free a delivery's concurrency lease (an attempt that ended with no outcome)."""
        self.redis.zrem(keys.destination(name, "inflight"), keys.deliver_member(delivery_id))

    # -- the operators' side ----------------------------------------------------------------

    def pause(self, name: str, seconds: float | None = None) -> Pause:
        """Pause ``name`` (for ``seconds``, or until resumed). Pausing again replaces it."""
        now = time.time()
        until = now + seconds if seconds else None
        key = keys.destination(name, "paused")
        value = dumps({"since": now, "until": until})
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(key, value, px=max(int(seconds * 1000), 1) if seconds else None)
        pipe.sadd(keys.CONTROLLED, name)
        pipe.execute()
        return Pause(now, until)

    def resume(self, name: str) -> list[tuple[str, object]]:
        """End ``name``'s pause; returns the parked deliveries still pending (delivery id,
        task spec), to publish again at once. The parked set is emptied."""
        self.redis.delete(keys.destination(name, "paused"))
        return self.unpark(name)

    def unpark(self, name: str) -> list[tuple[str, object]]:
        """The deliveries parked for ``name`` still pending (delivery id, task spec); the
        parked set is emptied."""
        flat = texts(
            self._unpark(keys=[keys.destination(name, "parked"), keys.PENDING_TASKS], args=[])
        )
        return [(keys.delivery_of(flat[i]), loads(flat[i + 1])) for i in range(0, len(flat), 2)]

    def states(self) -> list[tuple[str, int, float | None]]:
        """For the metrics: every destination that was ever paused or whose circuit moved,
        with its circuit (0 closed, 1 open, 2 half-open) and, while paused, since when."""
        names = sorted(texts(self.redis.smembers(keys.CONTROLLED)))
        circuits, pauses = self.circuits(names), self.paused(names)
        number = {"closed": 0, "open": 1, "half-open": 2}
        return [
            (
                name,
                number.get(circuits[name].state, 0),
                pauses[name].since if name in pauses else None,
            )
            for name in names
        ]

    def paused(self, names: Sequence[str]) -> dict[str, Pause]:
        """The pauses in force among ``names``."""
        raw = self.redis.mget([keys.destination(n, "paused") for n in names]) if names else []
        out: dict[str, Pause] = {}
        for name, value in zip(names, raw, strict=True):
            if value:
                data = loads(value)
                out[name] = Pause(float(data["since"]), data.get("until"))
        return out

    def circuits(self, names: Sequence[str]) -> dict[str, Circuit]:
        """Each destination's circuit (closed when it has no record)."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(keys.destination(name, "circuit"), "state", "failures", "until")
        out: dict[str, Circuit] = {}
        for name, (state, failures, until) in zip(names, pipe.execute(), strict=True):
            state = state or "closed"
            out[name] = Circuit(
                state,
                int(failures or 0),
                float(until) if state == "open" and until else None,
            )
        return out

    def inflight(self, names: Sequence[str]) -> dict[str, int]:
        """Live concurrency leases per destination."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.zcount(keys.destination(name, "inflight"), now, "+inf")
        return {name: int(n) for name, n in zip(names, pipe.execute(), strict=True)}

    def last_errors(self, names: Sequence[str]) -> dict[str, dict[str, object]]:
        """The last error of each destination that had one (``{"at", "error"}``)."""
        raw = self.redis.mget([keys.destination(n, "error") for n in names]) if names else []
        return {name: loads(value) for name, value in zip(names, raw, strict=True) if value}

    def stats(self, names: Sequence[str], now: float | None = None) -> dict[str, Stats]:
        """Each destination's attempts over the last :data:`STATS_MINUTES` minutes (the
        current minute included, so it covers between four and five whole minutes)."""
        minute = int((time.time() if now is None else now) // 60)
        minutes = range(minute - STATS_MINUTES + 1, minute + 1)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            for m in minutes:
                pipe.hgetall(keys.destination(name, f"stats:{m}"))
        replies = pipe.execute()
        out: dict[str, Stats] = {}
        for i, name in enumerate(names):
            out[name] = _stats(replies[i * len(minutes) : (i + 1) * len(minutes)])
        return out


def _stats(buckets: Iterable[dict[str, str]]) -> Stats:
    ok = failed = 0
    latency = [0] * (len(LATENCY_BOUNDS) + 1)
    for bucket in buckets:
        ok += int(bucket.get("ok", 0))
        failed += int(bucket.get("failed", 0))
        for i in range(len(latency)):
            latency[i] += int(bucket.get(f"l{i}", 0))
    total = sum(latency)
    if not total:
        return Stats(ok + failed, ok, None)
    rank, seen = 0.95 * total, 0
    for i, count in enumerate(latency):
        seen += count
        if seen >= rank:
            # beyond the last bound: reported as the last bound (a floor, not the value)
            return Stats(ok + failed, ok, float(LATENCY_BOUNDS[min(i, len(LATENCY_BOUNDS) - 1)]))
    return Stats(ok + failed, ok, None)  # pragma: no cover - the loop always returns
