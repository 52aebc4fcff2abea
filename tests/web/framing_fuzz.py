"""A framing fuzz for the web process: requests built wrong in every way HTTP/1.1 framing
can be, sent over real sockets, and what a correct server may answer them.

Used by ``tests/web/test_framing_fuzz.py`` (a few hundred cases in ``make test``) and by
``python -m bench framing`` (10,000 and more). Each case is the bytes a client sends on one
connection (one request, or several pipelined), after which it closes its sending side;
every answer must then be ``200`` or a ``4xx`` (``100 Continue`` may come before), and the
connection must end, answered or cleanly closed (a truncated request), within the timeout.

::

    outcome = exchange(port, case.data)
    problem = judge(outcome)            # None, or what was wrong
"""

from __future__ import annotations

import json
import random
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

WEBHOOK = b"/webhooks/webex-connect"
CRLF = b"\r\n"
MESSAGE = json.dumps({"oa": "447700900123", "da": "12345", "message": "framing"}).encode()

#: chunk-size lines: valid, negative, hex-prefixed, huge, signed, padded, with extensions
CHUNK_SIZES = [
    b"-6",
    b"-7;",
    b"-0",
    b"-1",
    b"0x2",
    b"0X2",
    b"+2",
    b"ffffffffffffffffffff",
    b"1" * 21,
    b"7fffffffffffffff",
    b"ffffffffffffffff0",
    b" 2",
    b"2 ",
    b"\t2",
    b"2\t",
    b"2 ;a=b",
    b"2;",
    b";2",
    b"",
    b"1_0",
    b"\xd9\xa2",  # an Arabic-Indic two
    b"2;a=b;c",
    b'2;a="x;y"',
    b"2;" + b"e" * 9000,
    b"z",
]
CONTENT_LENGTHS = [
    b"",
    b"-1",
    b"+2",
    b" 2",
    b"0x2",
    b"2, 2",
    b"2, 3",
    b"2,",
    b"99999999999999999999",
    b"999999999999999999999",
    b"1e3",
    b"2\x00",
]
TRANSFER_ENCODINGS = [
    b"chunked",
    b"Chunked",
    b"CHUNKED",
    b" chunked",
    b"chunked ",
    b"chunked, chunked",
    b"gzip, chunked",
    b"chunked, gzip",
    b"identity",
    b"identity, chunked",
    b"xchunked",
    b"chunked;q=1",
    b"",
]
TRAILERS = [
    b"X-Sum: 1\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"X-Fold: a\r\n b\r\n",
    b"Bad Trailer\r\n",
    b"X-Nul: a\x00b\r\n",
    b"\r\n\r\n",
]
VERSIONS = [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.10", b"http/1.1", b"HTTP/0.9", b"HTTP/1.1 "]
METHODS = [b"GET", b"PUT", b"post", b"CONNECT", b"OPTIONS", b"DELETE", b"P\x00ST", b"HEAD"]
ODD_HEADERS = [
    b"X-Fold: a\r\n  folded",
    b"X-Nul: a\x00b",
    b"X-Ctl: a\x01b",
    b"X-Vt: a\x0bb",
    b"Bad Name: x",
    b": empty-name",
    b"X-Colon:: x",
    b"Host: second",
    b" X-Leading-Space: x",
    b"X-Long: " + b"v" * 9000,
    b"Expect: 100-continue",
    b"Expect: something-else",
    b"Connection: close",
    b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket",
    b"Content-Type: application/json\r\nContent-Type: text/plain",
    b"X\xffHigh: v",
    b"X-Obs: caf\xe9",
]


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: tuple[int, ...] | None = None  #: the final answers it must get, when known


@dataclass
class Outcome:
    statuses: list[int] = field(default_factory=list)
    ended: bool = False  #: the server closed the connection within the timeout
    malformed: bytes = b""  #: answer bytes that are not an HTTP/1.1 answer
    error: str = ""  #: the connection itself failed (refused: the process is down)


# -- building requests ---------------------------------------------------------------------


def chunked(body: bytes, rng: random.Random, mutate: bool) -> bytes:
    """``body`` as chunks; with ``mutate``, one chunk line, one terminator or the trailers
    made wrong (or odd but valid)."""
    pieces, start = [], 0
    while start < len(body):
        size = rng.randint(1, max(1, len(body) - start))
        pieces.append(body[start : start + size])
        start += size
    out = []
    bad = rng.randrange(len(pieces) + 2) if mutate else -1
    for index, piece in enumerate(pieces):
        size = b"%x" % len(piece)
        end = CRLF
        if index == bad:
            kind = rng.randrange(4)
            if kind == 0:
                size = rng.choice(CHUNK_SIZES)
            elif kind == 1:
                size = size + rng.choice([b";ext", b";ext=1", b"; ext", b';e="v"'])
            elif kind == 2:
                end = rng.choice([b"\n", b"\r", b"", b"XX", b"\r\r\n"])
            else:
                size = b"%x" % (len(piece) + rng.choice([-1, 1, 5]))
        out.append(size + CRLF + piece + end)
    last = b"0"
    if bad == len(pieces):
        last = rng.choice([b"00", b"0;ext", b"000000000000000000000", b"-0", b"0x0", b"0 "])
    trailers = rng.choice(TRAILERS) if bad == len(pieces) + 1 else b""
    return b"".join(out) + last + CRLF + trailers + CRLF


def request(rng: random.Random) -> bytes:
    """One request, most parts normal and one or two of them wrong."""
    method, target, version = b"POST", WEBHOOK, b"HTTP/1.1"
    roll = rng.random()
    if roll < 0.08:
        version = rng.choice(VERSIONS)
    elif roll < 0.16:
        method = rng.choice(METHODS)
    elif roll < 0.22:
        method, target = (
            b"GET",
            rng.choice([b"/healthz", b"/readyz", b"*", b"http://relay/healthz"]),
        )
    headers = [b"Host: relay"] if rng.random() > 0.05 else []
    headers.append(b"Content-Type: application/json")
    if rng.random() < 0.25:
        headers.insert(rng.randrange(len(headers) + 1), rng.choice(ODD_HEADERS))
    body = MESSAGE if rng.random() < 0.7 else rng.randbytes(rng.randrange(0, 40))
    framing = rng.choice(["length", "length", "chunked", "chunked", "none", "both", "odd"])
    if framing == "length":
        length = len(body) + (rng.choice([-3, -1, 1, 4]) if rng.random() < 0.2 else 0)
        headers.append(b"Content-Length: %d" % max(length, 0))
        if rng.random() < 0.1:  # the same length twice, or another
            headers.append(b"Content-Length: %d" % (length + rng.choice([0, 0, 1])))
    elif framing == "chunked":
        encoding = b"chunked" if rng.random() < 0.7 else rng.choice(TRANSFER_ENCODINGS)
        headers.append(b"Transfer-Encoding: " + encoding)
        if rng.random() < 0.05:
            headers.append(b"Transfer-Encoding: chunked")
        body = chunked(body, rng, rng.random() < 0.6)
    elif framing == "both":
        headers.append(b"Content-Length: %d" % len(body))
        headers.insert(rng.randrange(len(headers)), b"Transfer-Encoding: chunked")
        body = chunked(body, rng, False)
    elif framing == "odd":
        headers.append(b"Content-Length: " + rng.choice(CONTENT_LENGTHS))
    rng.shuffle(headers)
    eol = CRLF if rng.random() < 0.85 else rng.choice([b"\n", b"\r", b"\r\r\n"])
    head = method + b" " + target + b" " + version + eol
    head += b"".join(line + eol for line in headers) + eol
    return head + body


def mutated(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one byte inserted, deleted or replaced somewhere."""
    at = rng.randrange(len(data) + 1)
    choice = rng.randrange(3)
    byte = bytes([rng.choice([0, 9, 10, 13, 32, 44, 45, 48, 58, 59, 120, 255])])
    if choice == 0:
        return data[:at] + byte + data[at:]
    if choice == 1:
        return data[:at] + data[at + 1 :]
    return data[:at] + byte + data[at + 1 :]


def truncations(data: bytes, name: str, expect: tuple[int, ...]) -> list[Case]:
    """``data`` cut at every point, and whole (answered ``expect``)."""
    cut = [Case(f"{name} cut at {end}", data[:end]) for end in range(len(data))]
    return [*cut, Case(f"{name} whole", data, expect)]


def generated(seed: int, count: int) -> list[Case]:
    """``count`` cases drawn from ``seed``: single requests, pipelined ones, with a byte
    changed, or cut short."""
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        shape = rng.random()
        data = request(rng)
        if shape < 0.2:  # pipelined behind a good one, or before one
            good = valid(rng)
            data = good + data if rng.random() < 0.5 else data + good
        if 0.2 <= shape < 0.35:
            data = mutated(data, rng)
        elif 0.35 <= shape < 0.45:
            data = data[: rng.randrange(len(data) + 1)]
        cases.append(Case(f"seed {seed} #{index}", data))
    return cases


def valid(rng: random.Random) -> bytes:
    """A request that is right (chunked or not, maybe with ``Expect: 100-continue``)."""
    head = b"POST " + WEBHOOK + b" HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
    if rng.random() < 0.2:
        head += b"Expect: 100-continue\r\n"
    if rng.random() < 0.5:
        return head + b"Content-Length: %d\r\n\r\n" % len(MESSAGE) + MESSAGE
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(MESSAGE, rng, False)


def templates() -> dict[str, tuple[bytes, tuple[int, ...]]]:
    """Right requests to cut at every point, with their answers when whole: a
    Content-Length POST, a chunked one with an extension and a trailer, two pipelined."""
    start = b"POST " + WEBHOOK + b" HTTP/1.1\r\nHost: relay\r\n"
    post = start + b"Content-Length: %d\r\n\r\n" % len(MESSAGE) + MESSAGE
    head = start + b"Transfer-Encoding: chunked\r\n\r\n"
    body = b"a;ext=1\r\n" + MESSAGE[:10] + CRLF + b"%x\r\n" % (len(MESSAGE) - 10)
    body += MESSAGE[10:] + CRLF + b"0\r\nX-Sum: 1\r\n\r\n"
    health = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"
    return {
        "content-length": (post, (200,)),
        "chunked": (head + body, (200,)),
        "pipelined": (health + health, (200, 200)),
    }


def cases(seed: int, count: int) -> list[Case]:
    """Every template cut at every point, then ``count`` generated cases."""
    fixed = [
        case
        for name, (data, expect) in templates().items()
        for case in truncations(data, name, expect)
    ]
    return fixed + generated(seed, count)


# -- sending them --------------------------------------------------------------------------

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n")


def exchange(port: int, data: bytes, timeout: float = 10.0) -> Outcome:
    """Send ``data`` on a new connection, close the sending side, read until the server
    closes (or ``timeout``): the answers' statuses."""
    outcome = Outcome()
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as exc:
        outcome.error = str(exc)
        return outcome
    received = b""
    deadline = time.monotonic() + timeout
    with conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused early and closed: the answer may still be there to read
        while True:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            except OSError:  # reset after the answer (unread bytes): ended all the same
                chunk = b""
            if not chunk:
                outcome.ended = True
                break
            received += chunk
    outcome.statuses, outcome.malformed = answers(received)
    return outcome


def answers(data: bytes) -> tuple[list[int], bytes]:
    """The statuses of the answers in ``data``, and what could not be read as one."""
    statuses = []
    while data:
        match = _STATUS.match(data)
        end = data.find(b"\r\n\r\n")
        if match is None or end < 0:
            return statuses, data[:200]
        status = int(match.group(1))
        statuses.append(status)
        head = data[:end].lower()
        length = re.search(rb"\r\ncontent-length: *(\d+)", head)
        data = data[end + 4 :]
        if length and not _STATUS.match(data):  # an answer to HEAD has no body
            data = data[int(length.group(1)) :]
        elif status >= 200:
            return statuses, b""  # read to the end
    return statuses, b""


def judge(outcome: Outcome, expect: tuple[int, ...] | None = None) -> str | None:
    """What was wrong with ``outcome`` (whose final answers should be ``expect``, when
    given), or None."""
    if outcome.error:
        return f"connection failed: {outcome.error}"
    if not outcome.ended:
        return f"no end within the timeout (answers so far: {outcome.statuses})"
    if outcome.malformed:
        return f"malformed answer: {outcome.malformed!r}"
    bad = [s for s in outcome.statuses if not (s in (100, 200) or 400 <= s < 500)]
    if bad:
        return f"answered {bad}"
    final = tuple(s for s in outcome.statuses if s >= 200)
    if expect is not None and final != expect:
        return f"answered {list(final)}, not {list(expect)}"
    return None


# -- running many --------------------------------------------------------------------------


@dataclass
class Report:
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)  #: final answers by status
    unanswered: int = 0  #: connections closed with no final answer
    problems: list[tuple[Case, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def hangs(self) -> int:
        return sum("no end" in problem for _, problem in self.problems)

    def summary(self) -> str:
        by_status = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.cases} cases in {self.seconds:.1f} s; answers {by_status}; "
            f"{self.unanswered} closed unanswered; {len(self.problems)} problems"
        )


def run(
    port: int, todo: Iterable[Case], threads: int = 4, on_problem: Callable | None = None
) -> Report:
    """Every case against the server on ``port``, ``threads`` at a time."""
    report = Report()
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        todo = list(todo)
        outcomes = pool.map(lambda c: exchange(port, c.data), todo)
        for case, outcome in zip(todo, outcomes, strict=True):
            report.cases += 1
            final = [s for s in outcome.statuses if s >= 200]
            report.statuses.update(final)
            report.unanswered += not final
            problem = judge(outcome, case.expect)
            if problem:
                report.problems.append((case, problem))
                if on_problem:
                    on_problem(case, problem)
    report.seconds = time.monotonic() - started
    return report


def unhealthy(port: int) -> str | None:
    """Why ``/healthz`` did not answer ``200`` within 2 s, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
            answer = conn.recv(65536)
    except OSError as exc:
        return f"/healthz: {exc}"
    return None if answer.startswith(b"HTTP/1.1 200 ") else f"/healthz: {answer[:100]!r}"


#: what a web log must never hold after a fuzz (a traceback, a worker gunicorn killed)
LOG_ALARMS = ("Traceback", "Error handling request", "WORKER TIMEOUT", "Worker exiting")


def log_alarms(text: str, workers: int) -> list[str]:
    """Lines of a web log that show a crash, and whether more than ``workers`` worker
    processes were booted (gunicorn replaces a worker that froze or died)."""
    lines = text.splitlines()
    alarms = [line for line in lines if any(alarm in line for alarm in LOG_ALARMS)]
    boots = sum("Booting worker" in line for line in lines)
    if boots > workers:
        alarms.append(f"{boots} workers booted, {workers} expected")
    return alarms
