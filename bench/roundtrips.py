"""Redis round trips per delivered event, by process role: a count the machine's load does
not move (unlike events/s or CPU time), to measure a change to the hot path by.

    python -m bench.roundtrips [--events N] [--json]

Starts the end-to-end stack of :mod:`bench.e2e` (a private Redis, relay's web, one Celery
worker, a local sink answering at once), POSTs :data:`WARM_UP` events, then opens
``MONITOR`` on the Redis, POSTs ``N`` unique seed payloads (16 connections), waits until
the sink has every delivery, and counts what each client sent during the run. A client
is put to a role (``web``, ``worker``) by its TCP port: the processes' open connections
are read (psutil) while they still hold them; a port no live process holds is ``other``.

A round trip is one command a client sent, except that a ``MULTI`` … ``EXEC``
transaction counts once (its ``EXEC``); what a Lua script calls runs inside Redis and is
no round trip (counted apart). A pipeline without a transaction would count once per
command (relay's hot path has none). The table gives, per delivered event, the round
trips of each role and of each command name; also the commands run inside scripts and
queued inside transactions. Idle polling (Celery's ``BRPOP`` loop, heartbeats) is counted
too: it is spread over the events, so use a few hundred of them at least.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import Counter, defaultdict

import psutil
import redis

from bench import loadgen
from bench.common import Sink, process_tree
from bench.e2e import start_stack, stop_stack, wait_delivered
from bench.ingest import PATH, templates

#: events sent before counting: enough for every intake thread to have its connections
WARM_UP = 400

#: what :meth:`Monitor.close` sends last (an ``ECHO``), to know MONITOR has read all before
MARK = "bench-roundtrips-end"


class Monitor:
    """``MONITOR`` on ``url`` in a thread: each client's commands, transactions counted
    once (:meth:`counts`)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.lines: list[tuple[str, str]] = []  # (client "host:port" or "lua", command)
        self.marked = threading.Event()
        self.monitor = self.client.monitor()
        self.monitor.__enter__()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        connection = self.monitor.connection
        while True:
            try:
                response = connection.read_response()
            except (redis.ConnectionError, OSError, ValueError):
                return
            if response is None:
                continue
            text = response.decode(errors="replace") if isinstance(response, bytes) else response
            # 1702000000.123456 [0 127.0.0.1:50412] "EVALSHA" "…" …
            try:
                _, rest = text.split(" [", 1)
                client_info, command = rest.split("] ", 1)
                who = client_info.split(" ", 1)[1]
                name = command.split('"', 2)[1].upper()
            except (ValueError, IndexError):
                continue
            if name == "ECHO" and MARK in command:
                self.marked.set()
                continue
            self.lines.append((who, name))

    def close(self, timeout: float = 30.0) -> None:
        """Stop once every command sent so far was read: a marker sent now comes last."""
        self.client.echo(MARK)
        if not self.marked.wait(timeout):
            raise RuntimeError("MONITOR did not see its marker")
        self.monitor.connection.disconnect()
        self.thread.join(5)
        self.client.close()


def ports_of(pids: list[int]) -> set[str]:
    """The local ``host:port`` of each TCP connection the processes hold."""
    found = set()
    for pid in pids:
        try:
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.laddr:
                    found.add(f"{conn.laddr.ip}:{conn.laddr.port}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def count(lines: list[tuple[str, str]], roles: dict[str, str]) -> dict:
    """Round trips by role and by (role, command); commands in scripts and in transactions."""
    trips: Counter = Counter()
    by_command: dict[str, Counter] = defaultdict(Counter)
    queued: Counter = Counter()
    scripted: Counter = Counter()
    open_multi: set[str] = set()
    for who, name in lines:
        if who == "lua":
            scripted[name] += 1
            continue
        role = roles.get(who, "other")
        if name == "MULTI":
            open_multi.add(who)
            continue
        if who in open_multi:
            if name in ("EXEC", "DISCARD"):
                open_multi.discard(who)
                trips[role] += 1
                by_command[role]["MULTI…EXEC"] += 1
            else:
                queued[name] += 1
            continue
        trips[role] += 1
        by_command[role][name] += 1
    return {
        "round_trips": dict(trips),
        "by_command": {role: dict(c) for role, c in by_command.items()},
        "in_transactions": dict(queued),
        "in_scripts": dict(scripted),
    }


def run(events: int = 500, progress=print) -> dict:
    sink = Sink(delay=0.0)
    stack = start_stack(sink, workers=1, worker_concurrency=16, web_concurrency=2, web_threads=4)
    monitor = None
    try:
        # warm up: the first events load the scripts, and each thread opens its connection
        warm = loadgen.run_subprocess(_load(stack.port, WARM_UP))
        wait_delivered(sink, {f"{i}:hook" for i, _ in warm["accepted"]}, 60)
        monitor = Monitor(stack.redis.url)
        progress(f"roundtrips: {events} events …")
        result = loadgen.run_subprocess(_load(stack.port, events))
        ids = [event_id for event_id, _ in result["accepted"]]
        missing = wait_delivered(sink, {f"{i}:hook" for i in ids}, 120)
        roles: dict[str, str] = {}
        workers = [pid for p in stack.workers for pid in process_tree(p.pid)]
        for role, pids in (("web", process_tree(stack.web.pid)), ("worker", workers)):
            for port in ports_of(pids):
                roles[port] = role
        monitor.close()
        lines, monitor = monitor.lines, None
        delivered = len(ids) - len(missing)
        counted = count(lines, roles)
        per = max(delivered, 1)
        return {
            "events": len(ids),
            "delivered": delivered,
            "per_event": {
                "round_trips": {r: n / per for r, n in counted["round_trips"].items()},
                "by_command": {
                    r: {c: n / per for c, n in sorted(cs.items(), key=lambda kv: -kv[1])}
                    for r, cs in counted["by_command"].items()
                },
                "in_transactions": {c: n / per for c, n in counted["in_transactions"].items()},
                "in_scripts": {c: n / per for c, n in counted["in_scripts"].items()},
            },
        }
    finally:
        if monitor is not None:
            monitor.monitor.connection.disconnect()
        stop_stack(stack)
        sink.close()


def _load(port: int, count: int) -> dict:
    return {
        "port": port,
        "path": PATH,
        "templates": templates(),
        "collect": True,
        "procs": 1,
        "mode": "closed",
        "count": count,
        "concurrency": 16,
        "nonce": os.urandom(4).hex(),
    }


def render(result: dict) -> str:
    per = result["per_event"]
    lines = [
        f"Redis round trips per delivered event ({result['delivered']} of {result['events']} "
        "delivered; a transaction counts once, a script's own calls not at all)"
    ]
    for role in sorted(per["round_trips"]):
        lines.append(f"  {role:<7} {per['round_trips'][role]:6.2f}")
        for name, n in per["by_command"].get(role, {}).items():
            if n >= 0.01:
                lines.append(f"      {name:<16} {n:6.2f}")
    for label, key in (
        ("queued in transactions", "in_transactions"),
        ("run by scripts", "in_scripts"),
    ):
        total = sum(per[key].values())
        lines.append(f"  commands {label}: {total:.2f} per event")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.roundtrips", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="the full counts as JSON")
    args = parser.parse_args(argv)
    result = run(args.events, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0 if result["delivered"] == result["events"] else 1


if __name__ == "__main__":
    sys.exit(main())
