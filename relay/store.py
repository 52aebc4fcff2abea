"""Redis state: dedupe claims, event history and look-ups.

Every key starts with ``relay:``. Values are JSON written with ``ensure_ascii=True`` so
that any text a sender manages to put in a payload (lone surrogates included) can be
stored and read back.

Keys:
    relay:dedupe:<sha256>     event id of the first copy of a notification
    relay:event:<id>          the event (JSON)
    relay:history:<id>        its life: a list of JSON entries, oldest first
    relay:ref:<value>         sorted set of event ids sharing a transid or tid
    relay:dlv:<delivery id>:n      attempts started (counted before each try: a try that
                                   kills its worker still counts)
    relay:dlv:<delivery id>:gen    generation of the delivery's live task message; a message
                                   of an older generation is a stale copy and is dropped
    relay:dlv:<delivery id>:lock   held while an attempt runs
    relay:dlv:<delivery id>:done   set once the destination accepted it
    relay:dlv:<delivery id>:log    every finished attempt (JSON list)
    relay:dead:<delivery id>       a dead letter (JSON); kept until purged
    relay:dead                     sorted set of dead-letter ids by time
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import redis

from relay.errors import UnavailableError
from relay.events import utc_now_iso

PREFIX = "relay:"
#: how long a dedupe claim lives before its event is confirmed enqueued (seconds): a web
#: process that dies between claim and enqueue must not make the sender's retry a duplicate
PENDING_CLAIM_TTL = 30.0


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def connect(url: str, timeout: float = 1.5) -> redis.Redis:
    """A client whose every call gives up after ``timeout`` seconds."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=True,
    )


def fingerprint(notification: object) -> str:
    """Same JSON content (whatever the key order or spacing) → same fingerprint."""
    canonical = json.dumps(notification, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Store:
    def __init__(self, client: redis.Redis, history_ttl: float, dedupe_ttl: float) -> None:
        self.redis = client
        self.history_ttl = int(history_ttl)
        self.dedupe_ttl_ms = int(dedupe_ttl * 1000)
        self.deliveries = DeliveryState(client, history_ttl)
        self.dead_letters = DeadLetters(client)

    # -- dedupe ---------------------------------------------------------------------------

    def claim(self, fingerprints: Sequence[str], event_ids: Sequence[str]) -> list[bool]:
        """Atomically claim each fingerprint for its event id; False = a duplicate."""
        with _unavailable_on_error():
            pipe = self.redis.pipeline(transaction=False)
            for fp, event_id in zip(fingerprints, event_ids, strict=False):
                pipe.set(_dedupe_key(fp), event_id, nx=True, px=int(PENDING_CLAIM_TTL * 1000))
            return [bool(ok) for ok in pipe.execute()]

    def confirm(self, fingerprints: Iterable[str]) -> None:
        """The events were enqueued: keep their claims for the whole dedupe window."""
        with _unavailable_on_error():
            pipe = self.redis.pipeline(transaction=False)
            for fp in fingerprints:
                pipe.pexpire(_dedupe_key(fp), self.dedupe_ttl_ms)
            pipe.execute()

    def release(self, fingerprints: Iterable[str]) -> None:
        """Best effort: forget claims whose events could not be enqueued."""
        keys = [_dedupe_key(fp) for fp in fingerprints]
        if keys:
            try:
                self.redis.delete(*keys)
            except redis.RedisError:
                pass  # the claims expire after PENDING_CLAIM_TTL anyway

    # -- history --------------------------------------------------------------------------

    def record_event(self, event: dict, *entries: dict) -> None:
        """Store the event (idempotent) and append ``entries`` to its history, atomically."""
        event_id = event["id"]
        score = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(PREFIX + "event:" + event_id, dumps(event), ex=self.history_ttl)
        for entry in entries:
            self._append(pipe, event_id, entry)
        for ref in _refs(event):
            pipe.zadd(PREFIX + "ref:" + ref, {event_id: score}, nx=True)
            pipe.expire(PREFIX + "ref:" + ref, self.history_ttl)
        pipe.execute()

    def add_history(self, event_id: str, entry: dict) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self._append(pipe, event_id, entry)
        pipe.execute()

    def _append(self, pipe, event_id: str, entry: dict) -> None:
        key = PREFIX + "history:" + event_id
        pipe.rpush(key, dumps({"at": utc_now_iso(), **entry}))
        pipe.expire(key, self.history_ttl)

    def event(self, event_id: str) -> dict | None:
        raw = self.redis.get(PREFIX + "event:" + event_id)
        return json.loads(raw) if raw else None

    def history(self, event_id: str) -> list[dict]:
        return [
            json.loads(item) for item in self.redis.lrange(PREFIX + "history:" + event_id, 0, -1)
        ]

    def find(self, ref: str) -> list[str]:
        """Event ids for a relay id, a transid or a tid, oldest first."""
        if self.redis.exists(PREFIX + "event:" + ref):
            return [ref]
        return list(self.redis.zrange(PREFIX + "ref:" + ref, 0, -1))


def _dedupe_key(fp: str) -> str:
    return PREFIX + "dedupe:" + fp


def _refs(event: dict) -> list[str]:
    return [value for value in (event.get("transid"), event.get("tid")) if value]


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    """Turns a Redis connection problem or timeout into UnavailableError."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise UnavailableError(f"redis: {exc}") from exc


class DeliveryState:
    """Per-delivery bookkeeping that makes redelivered task messages harmless."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.redis = client
        self.ttl = int(ttl)

    def _key(self, delivery_id: str, part: str) -> str:
        return f"{PREFIX}dlv:{delivery_id}:{part}"

    def is_done(self, delivery_id: str) -> bool:
        return bool(self.redis.exists(self._key(delivery_id, "done")))

    def mark_done(self, delivery_id: str) -> None:
        self.redis.set(self._key(delivery_id, "done"), "1", ex=self.ttl)

    def generation(self, delivery_id: str) -> int:
        return int(self.redis.get(self._key(delivery_id, "gen")) or 0)

    def next_generation(self, delivery_id: str) -> int:
        key = self._key(delivery_id, "gen")
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, self.ttl)
        return int(pipe.execute()[0])

    def acquire(self, delivery_id: str, seconds: float) -> bool:
        key = self._key(delivery_id, "lock")
        return bool(self.redis.set(key, "1", nx=True, px=int(seconds * 1000)))

    def release(self, delivery_id: str) -> None:
        self.redis.delete(self._key(delivery_id, "lock"))

    def begin_attempt(self, delivery_id: str) -> int:
        """The 1-based number of the attempt about to start."""
        key = self._key(delivery_id, "n")
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, self.ttl)
        return int(pipe.execute()[0])

    def log_attempt(self, delivery_id: str, attempt: dict) -> None:
        key = self._key(delivery_id, "log")
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, dumps(attempt))
        pipe.expire(key, self.ttl)
        pipe.execute()

    def attempts(self, delivery_id: str) -> list[dict]:
        items = self.redis.lrange(self._key(delivery_id, "log"), 0, -1)
        return [json.loads(item) for item in items]

    def reset_budget(self, delivery_id: str) -> int:
        """A fresh retry budget (for a replay); returns the new generation."""
        self.redis.delete(self._key(delivery_id, "n"), self._key(delivery_id, "done"))
        return self.next_generation(delivery_id)


class DeadLetters:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, record: dict) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(f"{PREFIX}dead:{record['id']}", dumps(record))
        pipe.zadd(f"{PREFIX}dead", {record["id"]: time.time()})
        pipe.execute()

    def get(self, delivery_id: str) -> dict | None:
        raw = self.redis.get(f"{PREFIX}dead:{delivery_id}")
        return json.loads(raw) if raw else None

    def ids(self) -> list[str]:
        return list(self.redis.zrange(f"{PREFIX}dead", 0, -1))

    def remove(self, delivery_id: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(f"{PREFIX}dead:{delivery_id}")
        pipe.zrem(f"{PREFIX}dead", delivery_id)
        return bool(pipe.execute()[0])
