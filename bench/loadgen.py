"""A lean HTTP/1.1 load generator: asyncio protocols on keep-alive connections, requests
pre-built from templates, optionally spread over several processes.

    echo '{"port": 8000, "templates": ["{\\"a\\": \\"@SEQ@\\"}"]}' | python -m bench.loadgen
    python -m bench.loadgen serve-null --port 8001      # a server that answers 200 {} (ceiling)

A spec (JSON on stdin) names the target (``host``, ``port``, ``path``), the bodies
(``templates``: JSON texts in which every ``@SEQ@`` becomes a fixed-width id unique to the
request, so a server that dedupes sees no copies; request *i* uses template *i* mod n) and
the load. The result (JSON on stdout) has the answers by status, latencies (s), the
generator's own CPU time and, with ``collect``, the ``accepted`` ids of each answer with
the monotonic time its request was sent (CLOCK_MONOTONIC is shared by all processes).

- ``mode: closed`` — ``concurrency`` connections each send, wait for the answer, send the
  next; for ``warmup`` + ``seconds`` (only answers in the last ``seconds`` count) or until
  ``count`` requests were sent.
- ``mode: open`` — requests are due at ``rate``/s for ``seconds`` whatever the answers; a
  due request takes an idle connection of ``concurrency`` (or waits for one) and its
  latency counts from when it was due, so a server that falls behind is charged for the
  queue it causes (no coordinated omission).

One process drives a few thousand requests/s at a fraction of a core; ``procs`` splits
connections and rate over that many processes.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "@SEQ@"
GRACE = 10.0  #: seconds to wait for answers still out when the run ends


class Closed(ConnectionError):
    """The server closed the connection before answering a byte (a reused keep-alive
    connection it had just dropped): safe to send again on a new one."""


class Conn(asyncio.Protocol):
    """One keep-alive connection; ``request(data)`` → (status, body)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.head: tuple[int, int, int, bool] | None = None  # status, body start, length, close
        self.closed = False
        self.used = 0

    def connection_made(self, transport) -> None:  # noqa: D102
        self.transport = transport

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.buf += data
        if self.waiter is not None:
            self._parse()

    def _parse(self) -> None:
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail(ConnectionError("answer without Content-Length"))
                return
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop > 0 else len(head)].strip())
            self.head = (status, end + 4, length, b"\r\nconnection: close" in head)
        status, start, length, close = self.head
        if len(self.buf) < start + length:
            return
        body = bytes(self.buf[start : start + length])
        del self.buf[: start + length]
        self.head = None
        waiter, self.waiter = self.waiter, None
        if close:
            self.closed = True
            self.transport.close()
        if not waiter.done():
            waiter.set_result((status, body))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def connection_lost(self, exc) -> None:  # noqa: D102
        self.closed = True
        if self.waiter is not None:
            early = not self.buf and self.head is None and self.used > 0
            self._fail(
                Closed("closed before answering")
                if early
                else ConnectionError(f"connection lost: {exc}")
            )

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.waiter = self.loop.create_future()
        self.used += 1
        self.transport.write(data)
        return await self.waiter


class Client:
    """A connection that reconnects when the server dropped it."""

    def __init__(self, loop, host: str, port: int) -> None:
        self.loop, self.host, self.port = loop, host, port
        self.conn: Conn | None = None

    async def _connect(self) -> Conn:
        _, conn = await self.loop.create_connection(lambda: Conn(self.loop), self.host, self.port)
        self.conn = conn
        return conn

    async def send(self, data: bytes) -> tuple[int, bytes]:
        conn = self.conn
        if conn is None or conn.closed:
            conn = await self._connect()
        try:
            return await conn.request(data)
        except Closed:
            conn = await self._connect()
            return await conn.request(data)

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()


class Requests:
    """Request bytes from templates: ``make(i)`` is request *i*, unique across processes."""

    def __init__(self, spec: dict, proc: int) -> None:
        host = f"{spec.get('host', '127.0.0.1')}:{spec['port']}"
        self.prefix = f"{spec.get('nonce', os.urandom(4).hex())}-{proc:02d}-"
        sample = self.prefix + "0" * 9
        self.parts = []
        for template in spec["templates"]:
            pieces = [piece.encode() for piece in template.split(TOKEN)]
            length = sum(map(len, pieces)) + len(sample.encode()) * (len(pieces) - 1)
            head = (
                f"POST {spec.get('path', '/')} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
                "\r\n"
            ).encode()
            self.parts.append((head, pieces))

    def make(self, i: int) -> bytes:
        head, pieces = self.parts[i % len(self.parts)]
        seq = f"{self.prefix}{i:09d}".encode()
        return head + seq.join(pieces)


class Recorder:
    def __init__(self, collect: bool) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.accepted: list[tuple[str, float]] = []
        self.collect = collect
        self.sent = 0
        self.answered = 0  #: answers received, in the measured window or not
        self.first_sent: float | None = None
        self.last_done: float | None = None

    def answer(
        self,
        status: int,
        body: bytes,
        sent: float,
        latency: float,
        done: float,
        counted: bool = True,
    ) -> None:
        self.answered += 1
        if not counted:
            return
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        self.latencies.append(latency)
        self.last_done = done
        if self.collect and status == 200:
            for event_id in json.loads(body).get("accepted", ()):
                self.accepted.append((event_id, sent))

    def error(self, exc: BaseException) -> None:
        key = type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1


async def _closed(spec: dict, proc: int, procs: int, rec: Recorder) -> dict:
    loop = asyncio.get_running_loop()
    reqs = Requests(spec, proc)
    conns = max(
        1, spec.get("concurrency", 16) // procs + (proc < spec.get("concurrency", 16) % procs)
    )
    count = spec.get("count")
    if count is not None:
        count = count // procs + (proc < count % procs)
    warmup, seconds = spec.get("warmup", 0.0), spec.get("seconds", 10.0)
    t0 = time.monotonic()
    measure_from, end = t0 + warmup, t0 + warmup + seconds
    issued = 0

    async def run() -> None:
        nonlocal issued
        client = Client(loop, spec.get("host", "127.0.0.1"), spec["port"])
        try:
            while True:
                now = time.monotonic()
                if count is not None and issued >= count or count is None and now >= end:
                    return
                i, issued = issued, issued + 1
                data = reqs.make(i)
                sent = time.monotonic()
                if rec.first_sent is None:
                    rec.first_sent = sent
                rec.sent += 1
                try:
                    status, body = await client.send(data)
                except (ConnectionError, OSError) as exc:
                    rec.error(exc)
                    client.close()
                    await asyncio.sleep(0.01)
                    continue
                done = time.monotonic()
                rec.answer(
                    status,
                    body,
                    sent,
                    done - sent,
                    done,
                    counted=count is not None or measure_from <= done <= end,
                )
        finally:
            client.close()

    tasks = [loop.create_task(run()) for _ in range(conns)]
    limit = spec.get("max_seconds", 300.0) if count is not None else warmup + seconds + GRACE
    _, late = await asyncio.wait(tasks, timeout=limit)
    for task in late:
        task.cancel()
        rec.error(TimeoutError())
    stop = time.monotonic()
    window = (stop - (rec.first_sent or t0)) if count is not None else seconds
    return {"window": window, "connections": conns}


async def _open(spec: dict, proc: int, procs: int, rec: Recorder) -> dict:
    loop = asyncio.get_running_loop()
    reqs = Requests(spec, proc)
    rate = spec["rate"] / procs
    seconds = spec.get("seconds", 10.0)
    grace = spec.get("grace", GRACE)
    conns = max(1, spec.get("concurrency", 64) // procs)
    total = int(rate * seconds)
    clients = deque(Client(loop, spec.get("host", "127.0.0.1"), spec["port"]) for _ in range(conns))
    queue: deque[tuple[int, float]] = deque()
    inflight: dict[asyncio.Task, float] = {}  # task → when its current request counts from
    start = time.monotonic() + 0.05 + proc / spec["rate"]  # processes interleave

    async def run(client: Client, i: int, due: float | None) -> None:
        # ``due`` is None when the request went out as soon as the scheduler woke for it
        # (its latency counts from the send: the scheduler's own lateness is not the
        # server's); a request that waited for a connection counts from when it was due
        task = asyncio.current_task()
        while True:
            data = reqs.make(i)
            sent = time.monotonic()
            inflight[task] = sent if due is None else due
            if rec.first_sent is None:
                rec.first_sent = sent
            rec.sent += 1
            try:
                status, body = await client.send(data)
                done = time.monotonic()
                rec.answer(status, body, sent, done - inflight[task], done)
            except asyncio.CancelledError:
                client.close()
                raise
            except (ConnectionError, OSError) as exc:
                rec.error(exc)
                client.close()
            if not queue:
                clients.append(client)
                del inflight[task]
                return
            i, due = queue.popleft()

    for i in range(total):
        due = start + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        if clients:
            loop.create_task(run(clients.popleft(), i, None))
        else:
            queue.append((i, due))
    behind = len(queue)
    end = time.monotonic()
    # a server that fell behind: the queue drains for at most ``grace`` s; what is still
    # waiting (or out) then is abandoned, its latency counted as the time it has waited so
    # far — a lower bound, so the percentiles stay honest (``abandoned`` says how many)
    while inflight and time.monotonic() < end + grace:
        await asyncio.sleep(0.05)
    now = time.monotonic()
    abandoned = len(queue) + len(inflight)
    for _, due in queue:
        rec.latencies.append(now - due)
    for task, counted_from in list(inflight.items()):
        task.cancel()
        rec.latencies.append(now - counted_from)
    queue.clear()
    for client in clients:
        client.close()
    achieved = (
        rec.answered / (rec.last_done - start) if rec.last_done and rec.last_done > start else 0.0
    )
    return {
        "window": seconds,
        "connections": conns,
        "queued_at_end": behind,
        "abandoned": abandoned,
        "achieved_rate": achieved,
    }


def _run_proc(spec: dict, proc: int, procs: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_SELF)
    rec = Recorder(spec.get("collect", False))
    driver = _open if spec.get("mode", "closed") == "open" else _closed
    extra = asyncio.run(driver(spec, proc, procs, rec))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "latencies": rec.latencies,
        "statuses": rec.statuses,
        "errors": rec.errors,
        "accepted": rec.accepted,
        "sent": rec.sent,
        "answered": rec.answered,
        "cpu": cpu,
        "first_sent": rec.first_sent,
        "last_done": rec.last_done,
        **extra,
    }


def _child(args) -> dict:
    return _run_proc(*args)


def run(spec: dict) -> dict:
    """Run the load ``spec`` describes (see the module doc) and merge the processes' results."""
    procs = max(1, int(spec.get("procs", 1)))
    if procs == 1:
        parts = [_run_proc(spec, 0, 1)]
    else:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            parts = pool.map(_child, [(spec, p, procs) for p in range(procs)])
    merged: dict = {
        "latencies": [],
        "statuses": {},
        "errors": {},
        "accepted": [],
        "sent": 0,
        "answered": 0,
        "cpu": 0.0,
        "procs": procs,
    }
    for part in parts:
        merged["latencies"] += part["latencies"]
        merged["accepted"] += part["accepted"]
        merged["sent"] += part["sent"]
        merged["answered"] += part["answered"]
        merged["cpu"] += part["cpu"]
        for key in ("statuses", "errors"):
            for name, n in part[key].items():
                merged[key][name] = merged[key].get(name, 0) + n
    merged["window"] = max(part["window"] for part in parts)
    merged["connections"] = sum(part["connections"] for part in parts)
    firsts = [p["first_sent"] for p in parts if p["first_sent"] is not None]
    lasts = [p["last_done"] for p in parts if p["last_done"] is not None]
    merged["first_sent"] = min(firsts) if firsts else None
    merged["last_done"] = max(lasts) if lasts else None
    if spec.get("mode") == "open":
        merged["queued_at_end"] = sum(p["queued_at_end"] for p in parts)
        merged["abandoned"] = sum(p["abandoned"] for p in parts)
        merged["achieved_rate"] = sum(p["achieved_rate"] for p in parts)
    merged["ok"] = merged["statuses"].get("200", 0)
    return merged


def run_subprocess(spec: dict) -> dict:
    """``run(spec)`` in a fresh ``python -m bench.loadgen``: the generator gets its own
    interpreter (no GIL shared with a sink or anything else of the caller's)."""
    answer = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if answer.returncode != 0:
        raise RuntimeError(f"load generator failed: {answer.stderr.strip()[-2000:]}")
    return json.loads(answer.stdout)


def ceiling(concurrency: int, seconds: float = 2.0, procs: int = 1) -> dict:
    """Closed-loop requests/s against a null server in another process: a lower bound of
    what the generator can drive (the null server shares the machine too)."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", "serve-null", "--port", str(port)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        return run_subprocess(
            {
                "port": port,
                "templates": ['{"transid": "@SEQ@"}'],
                "concurrency": concurrency,
                "seconds": seconds,
                "warmup": 0.5,
                "procs": procs,
            }
        )
    finally:
        server.terminate()
        server.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- a null server, to measure the generator's own ceiling ---------------------------------

NULL_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class NullServer(asyncio.Protocol):
    def connection_made(self, transport) -> None:  # noqa: D102
        self.transport, self.buf = transport, bytearray()

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.buf += data
        answers = 0
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                break
            del self.buf[: end + 4 + length]
            answers += 1
        if answers:
            self.transport.write(NULL_ANSWER * answers)


def serve_null(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(NullServer, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-null"]:
        serve_null(int(argv[argv.index("--port") + 1]))
        return 0
    json.dump(run(json.load(sys.stdin)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
