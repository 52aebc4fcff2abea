"""Redis state: dedupe claims, event history and look-ups.

Every key starts with ``relay:``. Values are JSON written with ``ensure_ascii=True`` so
that any text a sender manages to put in a payload (lone surrogates included) can be
stored and read back.

Keys:
    relay:dedupe:<sha256>     event id of the first copy of a notification
    relay:event:<id>          the event (JSON)
    relay:history:<id>        its life: a list of JSON entries, oldest first
    relay:ref:<value>         sorted set of event ids sharing a transid or tid
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

    def record_event(self, event: dict, entry: dict) -> None:
        """Store the event (idempotent) and append ``entry`` to its history."""
        event_id = event["id"]
        score = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(PREFIX + "event:" + event_id, dumps(event), ex=self.history_ttl)
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
