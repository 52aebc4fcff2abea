"""Redis failovers under load, and what waiting for a replica costs the web.

A Sentinel topology of ``tests/topology.py`` (a primary, 2 replicas, 3 Sentinels that say
down after 2 s), relay's web under gunicorn with the Procfile's settings and ``workers``
Celery workers on it (bench.e2e's stack: every event one delivery, ``<event id>:hook``,
to a local sink that takes 5 ms), and a sender in a process of its own: unique inbound
messages due at ``rate``/s (open loop), each sent again 0.5 s after any answer but 200
(Webex Connect retries a 503), every answer recorded with its time. Every ``interval`` s
the primary is SIGKILLed, the Sentinels' failover waited for, and the old primary brought
back as a replica; ``failovers`` times. Per failover:

- refusal window: kill → the last 503 answered before the next kill;
- failover: kill → a majority of Sentinels name a new primary that says role:master;
- deliveries resume: kill → the first delivery of a message accepted (200) by a request
  sent after the kill;
- heartbeat staleness: ``relay:nodes`` read on the primary every 0.2 s, the largest
  ``now − last beat`` of any worker within the refusal window (also: until the next kill).

Overall: messages answered 200 (accepted, or a duplicate of a refused attempt the primary
had kept) and not delivered within ``drain`` s (lost, target 0); webhook-ids delivered more
than once, and how many of them were in flight at a kill (first delivered from 1 s before
it to the end of its refusal window); answers by status (only 200 and 503 expected); the
workers' "took over" lines (a live worker taken for dead, target 0).

The cost of WAIT: ingest saturation as bench.ingest measures it (closed loop, no worker)
on the same topology: relay's web with ``RELAY_REDIS_MIN_REPLICAS=1`` (the Sentinel
default) and with ``=0``, and a plain relay on one Redis, alternating over ``rounds``.

    python -m bench failover [--failovers N] [--failover-interval S] [--failover-rate R]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import e2e, ingest, loadgen
from bench.common import ROOT, EmbeddedRedis, Gunicorn, Sink, Stack, percentile
from relay.state import RedisError, connect
from relay.state import keys as state_keys
from tests.topology import DEFAULT_DOWN_AFTER_MS, Topology

SINK_DELAY = 0.005  #: seconds the sink takes per delivery
RETRY_AFTER = 0.5  #: seconds the sender waits before sending a refused message again
GIVE_UP = 60.0  #: seconds after its due time that the sender stops retrying a message
ANSWER_TIMEOUT = 10.0  #: seconds the sender waits for an answer
CONNECTIONS = 64  #: requests the sender has out at once, at most (the others wait)
LEAD = 6.0  #: seconds of load before the first kill
POLL = 0.2  #: seconds between two reads of the workers' heartbeats
IN_FLIGHT = 1.0  #: seconds before a kill from which a first delivery counts as in flight
TEMPLATE = json.dumps(
    {
        "userId": "9009",
        "channel": "SMS",
        "oa": "441157070619",
        "da": "15550100",
        "message": f"failover {loadgen.TOKEN}",
        "tid": loadgen.TOKEN,
        "datetime": "2024-01-07T14:36:09.266Z",
    }
)


@dataclass
class SentinelRedis:
    """The Redis a Stack is given when it is a Sentinel topology: only its URL is used."""

    url: str


# -- the sender (its own process: python -m bench.failover) --------------------------------


async def _send(spec: dict) -> dict:
    """Messages due at ``rate``/s until SIGTERM, each until answered 200 (or GIVE_UP)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reqs = loadgen.Requests({**spec, "templates": [TEMPLATE], "path": ingest.PATH}, 0)
    idle: list[loadgen.Client] = []
    out = asyncio.Semaphore(CONNECTIONS)
    answers: list[tuple[float, str]] = []
    #: tid → [due, answered 200 at, accepted ids, attempts, that 200's request sent at]
    messages: dict[str, list] = {}
    tasks: set[asyncio.Task] = set()

    async def one(i: int, due: float) -> None:
        data = reqs.make(i)
        record = messages[f"{reqs.prefix}{i:09d}"] = [due, None, [], 0, None]
        while True:
            async with out:
                client = idle.pop() if idle else loadgen.Client(loop, "127.0.0.1", spec["port"])
                record[3] += 1
                sent = time.monotonic()
                try:
                    status, body = await asyncio.wait_for(client.send(data), ANSWER_TIMEOUT)
                    code = str(status)
                    idle.append(client)
                except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
                    code, body = f"error:{type(exc).__name__}", b""
                    client.close()  # a new connection for the next request
            now = time.monotonic()
            answers.append((now, code))
            if code == "200":
                record[1], record[2], record[4] = now, json.loads(body)["accepted"], sent
                return
            if now - due > GIVE_UP:
                return
            await asyncio.sleep(RETRY_AFTER)

    start = time.monotonic() + 0.1
    print(json.dumps({"start": start}), flush=True)
    i = 0
    while not stop.is_set():
        due = start + i / spec["rate"]
        await asyncio.sleep(max(0.0, due - time.monotonic()))  # yields even when behind
        task = loop.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    stopped = time.monotonic()
    while tasks:
        await asyncio.gather(*list(tasks))
    return {"start": start, "stopped": stopped, "answers": answers, "messages": messages}


class Sender:
    """The sender's process, posting to ``port``; :meth:`stop` ends it and gives its
    records (all times are CLOCK_MONOTONIC, shared by the processes)."""

    def __init__(self, port: int, rate: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.failover"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"port": port, "rate": rate}) + "\n")
        self.process.stdin.close()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError("the failover sender did not start")
        self.start: float = json.loads(line)["start"]

    def stop(self) -> dict:
        """Stop sending new messages; the records once those under way are answered."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        assert self.process.stdout is not None
        out = self.process.stdout.read()  # its stdin is closed already: no communicate()
        if self.process.wait() != 0:
            raise RuntimeError(f"the failover sender failed (exit {self.process.returncode})")
        result: dict = json.loads(out)
        return result

    def kill(self) -> None:
        """End it now, if it still runs (a run that failed)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# -- heartbeats, read on whichever server is primary ----------------------------------------


class HeartbeatWatch:
    """Reads ``relay:nodes`` (worker → time of its last beat) every POLL s in a thread:
    samples of (monotonic time, largest ``now − last beat`` of any worker)."""

    def __init__(self, url: str) -> None:
        self.client = connect(url, timeout=0.5)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat-watch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(POLL):
            try:
                beats = self.client.zrange(state_keys.NODES, 0, -1, withscores=True)
            except RedisError:
                continue  # no primary answers now
            now = time.time()
            stale = [now - at for _, at in beats if at > 0]
            if stale:
                self.samples.append((time.monotonic(), max(stale)))

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        self.client.close()
        return self.samples


# -- the run -------------------------------------------------------------------------------


def _delivered(sink: Sink) -> dict[str, tuple[str, float, int]]:
    """webhook-id → (the message's tid, first delivered at, deliveries)."""
    with sink.lock:
        bodies, first, counts = dict(sink.first_body), dict(sink.first_ok), dict(sink.ok_count)
    return {wid: (json.loads(body)["tid"], first[wid], counts[wid]) for wid, body in bodies.items()}


def _drain(sink: Sink, tids: set[str], timeout: float) -> None:
    """Wait until a delivery of each message in ``tids`` reached the sink (≤ ``timeout`` s)."""
    deadline, seen = time.monotonic() + timeout, 0
    delivered: set[str] = set()
    while time.monotonic() < deadline:
        with sink.lock:
            bodies = list(sink.first_body.values())
        delivered.update(json.loads(body)["tid"] for body in bodies[seen:])
        seen = len(bodies)
        if tids <= delivered:
            return
        time.sleep(0.2)


def _kill_primaries(topology: Topology, start: float, o: dict, progress) -> list[dict]:
    """Kill the primary LEAD s after ``start`` and every ``interval`` s after, wait for the
    failover and bring the old one back as a replica; then wait out the last interval."""
    kills: list[dict] = []
    for k in range(o["failovers"]):
        time.sleep(max(0.0, start + LEAD + k * o["interval"] - time.monotonic()))
        old = topology.kill_primary()
        new, seconds = topology.wait_for_failover(old, timeout=30)
        healing = time.monotonic()
        topology.heal(old)
        kills.append(
            {
                "at": old.failed_at,
                "killed": old.port,
                "promoted": new.port,
                "failover_s": seconds,
                "heal_s": time.monotonic() - healing,
            }
        )
        progress(
            f"  failover {k + 1}/{o['failovers']}: :{old.port} killed, :{new.port} primary "
            f"after {seconds:.1f} s, the old one back as a replica {kills[-1]['heal_s']:.1f} s "
            "later"
        )
    time.sleep(max(0.0, start + LEAD + o["failovers"] * o["interval"] - time.monotonic()))
    return kills


def _trace(lost: list[dict], url: str, logs: dict[str, str]) -> None:
    """Add to each lost message where its events are in Redis (asked of the primary) and
    the log lines that name them. A message answered as a duplicate has no event id: its
    event is looked for among the routing tasks still pending (they carry the tid)."""
    client = connect(url, timeout=2.0)
    try:
        unsettled = client.hgetall(state_keys.PENDING_TASKS) if lost else {}
        for message in lost:
            if not message["ids"]:
                message["ids"] = [
                    member.split(":", 1)[1]
                    for member, task in unsettled.items()
                    if member.startswith("route:") and message["tid"] in task
                ]
            message["redis"] = {
                event_id: _whereabouts(client, event_id) for event_id in message["ids"]
            }
            message["log_lines"] = [
                f"{name}: {line}"
                for name, text in sorted(logs.items())
                for line in text.splitlines()
                if any(event_id in line for event_id in message["ids"])
            ][:20]
    finally:
        client.close()


def _whereabouts(client, event_id: str) -> dict:
    member = state_keys.route_member(event_id)
    due = client.zscore(state_keys.PENDING, member)
    nodes = client.zrange(state_keys.NODES, 0, -1)
    return {
        "stored": bool(client.exists(state_keys.event(event_id))),
        "routed": bool(client.exists(f"{state_keys.PREFIX}routed:{event_id}")),
        "in_inbox": client.lpos(state_keys.INBOX, event_id) is not None,
        "pending_task": bool(client.hexists(state_keys.PENDING_TASKS, member)),
        "overdue_in_s": None if due is None else due - time.time(),
        "owned_by": [node for node in nodes if client.sismember(state_keys.owned(node), member)],
    }


def _failovers(topology: Topology, o: dict, progress) -> dict:
    sink = Sink(delay=SINK_DELAY, keep_bodies=True)
    stack = e2e.start_stack(
        sink,
        o["workers"],
        o["worker_concurrency"],
        o["web_concurrency"],
        o["web_threads"],
        redis_server=SentinelRedis(topology.url()),  # type: ignore[arg-type]
    )
    watch = HeartbeatWatch(topology.url())
    sender = None
    try:
        progress(f"  failover: {o['rate']:g} messages/s to :{stack.port} …")
        sender = Sender(stack.port, o["rate"])
        kills = _kill_primaries(topology, sender.start, o, progress)
        sent = sender.stop()
        accepted = {tid for tid, record in sent["messages"].items() if record[1] is not None}
        progress(f"  failover: {len(accepted):,} messages accepted; waiting for deliveries …")
        _drain(sink, accepted, o["drain"])
        samples = watch.stop()
        logs = {path.stem: path.read_text(errors="replace") for path in stack.dir.glob("*.log")}
        result = analyse(sent, kills, _delivered(sink), samples, logs)
        _trace(result["lost_messages"], topology.url(), logs)
        if o["keep"]:
            result["logs"] = str(stack.dir)
        return result
    finally:
        if sender is not None:
            sender.kill()
        watch.stop()
        e2e.stop_stack(stack, keep=o["keep"])
        sink.close()


def _spread(values: list[float]) -> dict:
    return {"p50": percentile(values, 50), "max": max(values) if values else float("nan")}


def analyse(
    sent: dict,
    kills: list[dict],
    deliveries: dict[str, tuple[str, float, int]],
    samples: list[tuple[float, float]],
    logs: dict[str, str],
) -> dict:
    """The figures of the module docstring from the records of one run."""
    answers, messages = sent["answers"], sent["messages"]
    first: dict[str, float] = {}  # tid → its first delivery
    ids_of: dict[str, set[str]] = {}
    for wid, (tid, at, _) in deliveries.items():
        first[tid] = min(at, first.get(tid, at))
        ids_of.setdefault(tid, set()).add(wid)
    accepted = {tid: record for tid, record in messages.items() if record[1] is not None}
    rows = []
    for k, kill in enumerate(kills):
        killed = kill["at"]
        until = kills[k + 1]["at"] if k + 1 < len(kills) else float("inf")
        refused = [at for at, code in answers if code == "503" and killed <= at < until]
        window = max(refused) - killed if refused else 0.0
        resumed = [
            deliveries[f"{event_id}:hook"][1]
            for r in accepted.values()
            if killed <= r[4] < until
            for event_id in r[2]
            if f"{event_id}:hook" in deliveries
        ]
        in_window = [s for at, s in samples if killed <= at <= killed + window]
        in_interval = [s for at, s in samples if killed <= at < until]
        rows.append(
            {
                **{key: value for key, value in kill.items() if key != "at"},
                "at_s": killed - sent["start"],
                "refusal_window_s": window,
                "refused": len(refused),
                "resume_s": min(resumed) - killed if resumed else None,
                "staleness_s": max(in_window) if in_window else None,
                "staleness_until_next_s": max(in_interval) if in_interval else None,
            }
        )
    windows = [
        (kill["at"] - IN_FLIGHT, kill["at"] + row["refusal_window_s"])
        for kill, row in zip(kills, rows, strict=True)
    ]
    repeated = {wid: n for wid, (_, _, n) in deliveries.items() if n > 1}
    in_flight = [wid for wid in repeated if any(a <= deliveries[wid][1] <= b for a, b in windows)]
    lost = sorted(tid for tid in accepted if tid not in first)
    statuses = Counter(code for _, code in answers)
    delays = [r[1] - r[0] for r in accepted.values()]  # due → answered 200, retries included

    def figures(key: str) -> dict:
        return _spread([row[key] for row in rows if row[key] is not None])

    worker_logs = [text for name, text in logs.items() if name.startswith("worker")]
    tracebacks = [  # a JSON log line is one record, its traceback inside
        f"{name}: {line}"
        for name, text in sorted(logs.items())
        for line in text.splitlines()
        if "Traceback" in line
    ]
    return {
        "rows": rows,
        "refusal_window_s": figures("refusal_window_s"),
        "failover_s": figures("failover_s"),
        "resume_s": figures("resume_s"),
        "staleness_s": figures("staleness_s"),
        "staleness_until_next_s": figures("staleness_until_next_s"),
        "messages": len(messages),
        "accepted": len(accepted),
        "accepted_as_duplicate": sum(1 for r in accepted.values() if not r[2]),
        "unanswered": len(messages) - len(accepted),
        "retried": sum(1 for r in messages.values() if r[3] > 1),
        "answered_after_s": {
            "p50": percentile(delays, 50),
            "p99": percentile(delays, 99),
            "max": max(delays, default=float("nan")),
        },
        "lost": len(lost),
        "lost_messages": [
            {
                "tid": tid,
                "ids": accepted[tid][2],
                "duplicate": not accepted[tid][2],
                "due_s": accepted[tid][0] - sent["start"],
                "answered_s": accepted[tid][1] - sent["start"],
                "attempts": accepted[tid][3],
            }
            for tid in lost[:20]
        ],
        "repeated_ids": len(repeated),
        "repeat_deliveries": sum(n - 1 for n in repeated.values()),
        "repeated_in_flight": len(in_flight),
        "repeated_not_in_flight": sorted(set(repeated) - set(in_flight))[:20],
        "messages_under_two_ids": sum(1 for wids in ids_of.values() if len(wids) > 1),
        "answers": dict(sorted(statuses.items())),
        "unexpected_answers": sum(n for code, n in statuses.items() if code not in {"200", "503"}),
        "takeovers": sum(text.count("took over") for text in worker_logs),
        "reconciled": sum(text.count("Redis failed over") for text in worker_logs),
        "tracebacks": len(tracebacks),
        "traceback_lines": tracebacks[:5],
    }


def _wait_cost(topology: Topology, o: dict, progress) -> dict:
    """Ingest saturation (bench.ingest's closed loop) of relay's web with and without WAIT
    on the topology, and of a plain relay on one Redis; the targets alternate each round."""
    topology.wait_synced()
    env = {"WEB_THREADS": str(o["web_threads"]), "RELAY_REDIS_MIN_REPLICAS": "1"}
    stack = Stack(
        ingest.RULES,
        workers=0,
        env=env,
        web_workers=o["web_concurrency"],
        redis=SentinelRedis(topology.url()),  # type: ignore[arg-type]
    )
    plain = EmbeddedRedis(stack.dir / "plain-redis").start()
    others: list[Gunicorn] = []
    try:
        unwaited = {**stack.env, "RELAY_REDIS_MIN_REPLICAS": "0"}
        others.append(Gunicorn("relay.web.wsgi:app", unwaited, stack.dir / "web-nowait.log"))
        alone = {**unwaited, "RELAY_REDIS_URL": plain.url}
        others.append(Gunicorn("relay.web.wsgi:app", alone, stack.dir / "web-plain.log"))
        primary = topology.primary().pid
        targets = {
            "wait": (ingest.Server("wait", stack.port, stack.web.pid), primary),
            "no_wait": (ingest.Server("no_wait", others[0].port, others[0].process.pid), primary),
            "plain": (
                ingest.Server("plain", others[1].port, others[1].process.pid),
                plain.process.pid,
            ),
        }
        names = list(targets)
        share = o["seconds"] / o["rounds"]
        runs: dict[str, list] = {name: [] for name in names}
        for r in range(o["rounds"]):
            for name in names[r % 3 :] + names[: r % 3]:
                spec = {
                    "mode": "closed",
                    "concurrency": o["concurrency"],
                    "seconds": share,
                    "warmup": o["warmup"],
                    "procs": o["procs"],
                }
                runs[name].append(ingest._drive(*targets[name], spec))
                progress(
                    f"  failover: WAIT cost round {r + 1}/{o['rounds']} {name:<7} "
                    f"{runs[name][-1][0]['ok'] / share:7.0f} req/s"
                )
        out: dict = {"seconds_per_round": share, "targets": {}}
        for name in names:
            merged, cpu = ingest._merge(runs[name])
            out["targets"][name] = {
                **ingest.summary(merged, o["seconds"], cpu),
                "rounds_rps": [result["ok"] / share for result, _ in runs[name]],
            }
        out["round_ratios"] = [
            wait[0]["ok"] / free[0]["ok"] if free[0]["ok"] else 0.0
            for wait, free in zip(runs["wait"], runs["no_wait"], strict=True)
        ]
        if o["keep"]:
            out["logs"] = str(stack.dir)
        return out
    finally:
        for gunicorn in others:
            gunicorn.close()
        stack.close()
        plain.stop()
        if not o["keep"]:
            shutil.rmtree(stack.dir, ignore_errors=True)


def run(
    failovers: int = 10,
    interval: float = 12.0,
    rate: float = 200.0,
    workers: int = 2,
    worker_concurrency: int = 16,
    web_concurrency: int = 2,
    web_threads: int = 4,
    drain: float = 120.0,
    seconds: float = 10.0,
    concurrency: int = 16,
    rounds: int = 3,
    warmup: float = 1.0,
    procs: int = 1,
    keep: bool = False,
    progress=print,
) -> dict:
    """The figures of the module docstring."""
    options = dict(locals())
    del options["progress"]
    directory = Path(tempfile.mkdtemp(prefix="relay-bench-failover-"))
    topology = Topology(directory / "topology").start()
    try:
        out = {"config": options, **_failovers(topology, options, progress)}
        if keep:
            out["topology"] = str(directory)
        out["wait_cost"] = _wait_cost(topology, options, progress)
        return out
    finally:
        topology.stop()
        if keep:
            progress(f"  failover: kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


# -- the table -----------------------------------------------------------------------------


def _s(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def details(fo: dict) -> list[str]:
    """The lines of ``python -m bench``'s table below the targets."""
    c = fo["config"]
    lines = [
        f"failover: {c['failovers']} SIGKILLs of the Redis primary, one every "
        f"{c['interval']:g} s, under {c['rate']:g} inbound messages/s (open loop; a refused "
        f"message sent again after {RETRY_AFTER:g} s); 3 Sentinels, down after "
        f"{DEFAULT_DOWN_AFTER_MS / 1000:g} s; relay's web gunicorn {c['web_concurrency']} × "
        f"{c['web_threads']}, {c['workers']} Celery workers × {c['worker_concurrency']} "
        f"threads, a sink of {SINK_DELAY * 1000:g} ms. Seconds from each kill:"
    ]
    for n, row in enumerate(fo["rows"], 1):
        lines.append(
            f"  {n:>2} (at {row['at_s']:.1f} s): failover {_s(row['failover_s'])}, 503s until "
            f"{_s(row['refusal_window_s'])} ({row['refused']} answers), deliveries resume "
            f"{_s(row['resume_s'])}, heartbeats "
            f"{_s(row['staleness_s'])} stale ({_s(row['staleness_until_next_s'])} until the "
            f"next kill); old primary back as a replica {_s(row['heal_s'])} s after the failover"
        )
    for label, key in (
        ("failover (Sentinels)", "failover_s"),
        ("refusal window", "refusal_window_s"),
        ("deliveries resume", "resume_s"),
        ("heartbeat staleness in the refusal window", "staleness_s"),
        ("heartbeat staleness until the next kill", "staleness_until_next_s"),
    ):
        lines.append(f"  {label}: p50 {_s(fo[key]['p50'])} s, max {_s(fo[key]['max'])} s")
    answers = ", ".join(f"{code}: {n:,}" for code, n in fo["answers"].items())
    lines += [
        f"  messages {fo['messages']:,}: answered 200 {fo['accepted']:,} (of which "
        f"{fo['accepted_as_duplicate']:,} as a duplicate of a refused attempt), never "
        f"{fo['unanswered']:,}; {fo['retried']:,} sent more than once; answers: {answers}",
        "  due → answered 200 (refusals and retries included): p50 "
        f"{_s(fo['answered_after_s']['p50'], 2)} s, p99 {_s(fo['answered_after_s']['p99'], 2)} s, "
        f"max {_s(fo['answered_after_s']['max'], 2)} s",
        f"  lost {fo['lost']}; webhook-ids delivered more than once {fo['repeated_ids']} "
        f"({fo['repeat_deliveries']} extra deliveries; {fo['repeated_in_flight']} in flight "
        f"at a kill); messages delivered under two event ids {fo['messages_under_two_ids']}",
        f"  workers: took over {fo['takeovers']}, reconciled after a failover "
        f"{fo['reconciled']}; log records with a traceback {fo['tracebacks']}",
    ]
    lines += [f"    {line[:240]}" for line in fo["traceback_lines"]]
    if fo["repeated_not_in_flight"]:
        lines.append(f"  repeated, not in flight at a kill: {fo['repeated_not_in_flight']}")
    for m in fo["lost_messages"]:
        lines.append(
            f"  lost: message {m['tid']} (due at {m['due_s']:.1f} s, answered 200 "
            f"{'as a duplicate ' if m['duplicate'] else ''}at {m['answered_s']:.1f} s after "
            f"{m['attempts']} attempts), events {', '.join(m['ids']) or '(none found)'}"
        )
        for event_id, where in m.get("redis", {}).items():
            lines.append(f"    {event_id} in Redis after the drain: {where}")
        lines += [f"    {line[:300]}" for line in m.get("log_lines", [])]
    if fo.get("logs"):
        lines.append(f"  logs kept: web and workers in {fo['logs']}, Redis in {fo['topology']}")
    wc = fo.get("wait_cost")
    if wc:
        lines += [
            f"WAIT cost: ingest saturation (closed loop, {c['concurrency']} connections, no "
            f"worker), {c['rounds']} alternating rounds of {wc['seconds_per_round']:.1f} s: "
            "req/s median (each round); latency p50 / p99 ms",
        ]
        labels = {
            "wait": "Sentinel, RELAY_REDIS_MIN_REPLICAS=1",
            "no_wait": "Sentinel, RELAY_REDIS_MIN_REPLICAS=0",
            "plain": "one Redis, no Sentinel",
        }
        for name, label in labels.items():
            t = wc["targets"][name]
            rounds = ", ".join(f"{x:,.0f}" for x in t["rounds_rps"])
            lines.append(
                f"  {label}: {statistics.median(t['rounds_rps']):,.0f} ({rounds}); "
                f"{t['p50_ms']:.1f} / {t['p99_ms']:.1f} ms; not 200: {t['not_200']}"
            )
        ratios = ", ".join(f"{x:.0%}" for x in wc["round_ratios"])
        lines.append(
            f"  MIN_REPLICAS=1 ÷ =0: {statistics.median(wc['round_ratios']):.0%} ({ratios})"
        )
    return lines


def main() -> int:
    """The sender: a spec on stdin, its start on stdout, its records once SIGTERMed."""
    spec = json.loads(sys.stdin.readline())
    json.dump(asyncio.run(_send(spec)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
