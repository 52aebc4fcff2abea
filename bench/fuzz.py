"""A mutation fuzz of the public webhook, end to end (issue 29).

Bodies made from the seed payloads (``tests/fixtures/webex-connect``) and the documented
variants (case-variant keys, ``userld``, a numeric ``code``) are mutated — keys dropped,
renamed and retyped; odd values (lone surrogates, ``NaN``, ``1e999``, ``2**70``, deep
nesting, control characters, template syntax); truncation, byte flips, batches — and
POSTed through a running relay (web under gunicorn, a Celery worker, a local sink; see
:mod:`bench.e2e`). Reported: the answers by status, the routing errors in the worker's
log (target 0), and whether every accepted event was delivered or dead-lettered with a
reason within ``drain`` s of the last POST.
"""

from __future__ import annotations

import copy
import http.client
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from bench.common import Sink, Stack
from bench.e2e import start_stack, stop_stack
from bench.ingest import SEEDS

DEFAULT_BODIES = 1_000_000
DEFAULT_SEED = 29
DRAIN = 60.0  #: seconds after the last POST for every accepted event to end

#: values a key may be given instead of its own: lone surrogates, non-characters, control
#: characters, template syntax, numbers past a float or a 64-bit integer, every JSON type
ODD_VALUES: list[Any] = [
    "\ud800",
    "X\ud800Y",
    "\udfff",
    "\ud83d",
    "\ufffe\uffff",
    "\x00\x07\x1b[31m",
    "\u202e\u2028",
    "{{ 7*7 }}",
    "{% for x in range(10**9) %}{% endfor %}",
    "{{ ''.__class__.__mro__ }}",
    "${jndi:ldap://x}",
    "",
    " ",
    "x" * 5000,
    2**70,
    -(2**63),
    1.5,
    0,
    True,
    None,
    [],
    {},
    [1, "a", None],
    {"a": {"b": "\ud800"}},
    '{"a": "\\ud800", "n": 1e999}',
    "a=\ud800;b=%ED%A0%80",
]
#: JSON text JSON values cannot be written as: replaced into the serialized body
RAW_VALUES = ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 5000, "[" * 60 + "]" * 60]
_RAW = re.compile(r'"@raw(\d+)@"')


def seeds() -> list[dict]:
    """The seed payloads and their documented variants."""
    out = [json.loads(path.read_text()) for path in sorted(SEEDS.glob("*.json"))]
    variants = []
    for payload in out:
        if "deliveryInfoNotification" in payload:
            info = json.loads(json.dumps(payload))
            info["deliveryInfoNotification"]["deliveryInfo"]["code"] = 7500  # a number
            info["DeliveryInfoNotification"] = info.pop("deliveryInfoNotification")
            variants.append(info)
        else:
            variant = {key.upper() if key == "message" else key: v for key, v in payload.items()}
            variant["userld"] = variant.pop("userId", "9009")  # the vendor's misspelling
            variants.append(variant)
    return out + variants


def _paths(value: Any, at: tuple = ()) -> Iterator[tuple]:
    """Every path to a key of ``value``'s objects (and to the items of its arrays)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*at, key)
            yield from _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*at, index)
            yield from _paths(item, (*at, index))


def _parent(value: Any, path: tuple) -> Any:
    for step in path[:-1]:
        value = value[step]
    return value


def _drop(rng: random.Random, doc: Any, path: tuple) -> None:
    parent = _parent(doc, path)
    if isinstance(parent, dict):
        del parent[path[-1]]


def _rename(rng: random.Random, doc: Any, path: tuple) -> None:
    parent, key = _parent(doc, path), path[-1]
    if isinstance(parent, dict):
        new = rng.choice([key.upper(), key.lower(), key.swapcase(), key + "\ud800", key[:-1]])
        parent[new] = parent.pop(key)


def _retype(rng: random.Random, doc: Any, path: tuple) -> None:
    parent = _parent(doc, path)
    if rng.random() < 0.25:
        parent[path[-1]] = f"@raw{rng.randrange(len(RAW_VALUES))}@"
    else:
        # a copy: the same list put in twice could be put inside itself by a later retype
        parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))


def _mutated(rng: random.Random, base: list[dict]) -> Any:
    doc = json.loads(json.dumps(rng.choice(base)))
    unique = f"fz-{rng.getrandbits(64):016x}"  # not a duplicate of an earlier body
    receipt = doc.get("deliveryInfoNotification") or doc.get("DeliveryInfoNotification")
    if isinstance(receipt, dict):
        receipt["transid"] = unique
    else:
        doc["tid"] = unique
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        paths = list(_paths(doc))
        if not paths:
            break
        rng.choice((_drop, _rename, _retype, _retype))(rng, doc, rng.choice(paths))
    return doc


def body(rng: random.Random, base: list[dict]) -> bytes:
    """One body: a mutated notification, or a batch of them, serialized (a lone surrogate
    as an escape or as its bytes), perhaps truncated or with bytes flipped."""
    doc: Any = _mutated(rng, base)
    if rng.random() < 0.1:
        doc = [_mutated(rng, base) for _ in range(rng.randint(1, 5))]
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5)
    text = _RAW.sub(lambda m: RAW_VALUES[int(m.group(1))], text)
    data = text.encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.05:
        data = data[: rng.randrange(len(data) + 1)]
    elif roll < 0.10:
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        data = bytes(flipped)
    return data


def bodies(count: int, seed: int = DEFAULT_SEED) -> Iterator[bytes]:
    rng, base = random.Random(seed), seeds()
    for _ in range(count):
        yield body(rng, base)


class Poster:
    """POSTs bodies on ``threads`` kept-alive connections; counts answers by status and
    collects the ids of the accepted events."""

    def __init__(self, port: int, path: str, threads: int = 8) -> None:
        self.port, self.path, self.threads = port, path, threads
        self.statuses: Counter[int] = Counter()
        self.accepted: list[str] = []
        self.errors = 0
        self.lock = threading.Lock()

    def run(self, source: Iterator[bytes]) -> None:
        feed = threading.Lock()

        def work() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            while True:
                with feed:
                    data = next(source, None)
                if data is None:
                    break
                try:
                    status, answer = self._post(connection, data)
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    with self.lock:
                        self.errors += 1
                    continue
                ids = json.loads(answer).get("accepted", []) if status == 200 else []
                with self.lock:
                    self.statuses[status] += 1
                    self.accepted.extend(ids)
            connection.close()

        workers = [threading.Thread(target=work) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _post(self, connection: http.client.HTTPConnection, data: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        connection.request("POST", self.path, body=data, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
        return response.status, answer


def outcomes(stack: Stack, sink: Sink, ids: list[str], drain: float) -> dict[str, Any]:
    """Wait (≤ ``drain`` s) until every accepted event was delivered to the sink or
    dead-lettered with a reason; what each came to."""
    import redis

    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    deadline = time.monotonic() + drain
    pending = set(ids)
    dead: Counter[str] = Counter()
    while True:
        with sink.lock:
            pending = {i for i in pending if f"{i}:hook" not in sink.first_ok}
        for event_id in list(pending):
            reason = _dead_reason(client, event_id)
            if reason is not None:
                dead[reason.split(":", 1)[0]] += 1
                pending.discard(event_id)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return {
        "delivered": len(ids) - len(pending) - sum(dead.values()),
        "dead_lettered": dict(dead),
        "lost": len(pending),
        "lost_examples": sorted(pending)[:5],
    }


def _dead_reason(client: Any, event_id: str) -> str | None:
    for target in ("hook", "(routing)"):
        raw = client.get(f"relay:dead:{event_id}:{target}")
        if raw:
            return str(json.loads(raw).get("reason") or "no reason")
    return None


def routing_errors(stack: Stack) -> list[str]:
    """Lines of the workers' logs that say a routing failed (or a traceback)."""
    found = []
    for log in sorted(stack.dir.glob("worker*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if ("routing" in line and "failed" in line) or "Traceback" in line:
                found.append(line[:300])
    return found


def run(
    count: int = DEFAULT_BODIES,
    seed: int = DEFAULT_SEED,
    threads: int = 8,
    drain: float = DRAIN,
    web_concurrency: int = 2,
    web_threads: int = 8,
    keep: bool = False,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Post ``count`` mutated bodies through a relay; the figures (see the module)."""
    sink = Sink()
    stack = start_stack(sink, 1, 8, web_concurrency, web_threads)
    try:
        poster = Poster(stack.port, "/webhooks/webex-connect", threads)
        progress(f"  fuzz: posting {count:,} mutated bodies (seed {seed})")
        started = time.monotonic()
        poster.run(bodies(count, seed))
        seconds = time.monotonic() - started
        progress(f"  fuzz: {dict(sorted(poster.statuses.items()))} in {seconds:.0f} s")
        ended = outcomes(stack, sink, poster.accepted, drain)
        errors = routing_errors(stack)
    finally:
        stop_stack(stack, keep=keep)
        sink.close()
    return {
        "bodies": count,
        "seed": seed,
        "seconds": seconds,
        "bodies_per_s": count / max(seconds, 1e-9),
        "statuses": {str(k): v for k, v in sorted(poster.statuses.items())},
        "server_errors": sum(v for k, v in poster.statuses.items() if k >= 500),
        "connection_errors": poster.errors,
        "accepted": len(poster.accepted),
        **ended,
        "routing_errors": len(errors),
        "routing_error_examples": errors[:5],
    }


def details(fz: dict) -> list[str]:
    statuses = ", ".join(f"{k}: {v:,}" for k, v in fz["statuses"].items())
    dead = ", ".join(f"{k}: {v:,}" for k, v in fz["dead_lettered"].items()) or "none"
    lines = [
        f"Fuzz of the webhook: {fz['bodies']:,} mutated bodies (seed {fz['seed']}) in "
        f"{fz['seconds']:.0f} s ({fz['bodies_per_s']:,.0f}/s)",
        f"  answers: {statuses}; connection errors {fz['connection_errors']}",
        f"  accepted events {fz['accepted']:,}: delivered {fz['delivered']:,}, "
        f"dead-lettered ({dead}), neither within the drain {fz['lost']}",
        f"  routing errors in the worker log: {fz['routing_errors']}",
    ]
    lines += [f"    {line}" for line in fz["routing_error_examples"]]
    if fz["lost_examples"]:
        lines.append(f"  not ended: {', '.join(fz['lost_examples'])}")
    return lines
