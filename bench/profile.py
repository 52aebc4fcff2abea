"""Where relay's CPU goes under load: a py-spy profile of a Celery worker or of the web.

    python -m bench.profile worker [--burst N] [--seconds S] [--top K] [--raw PATH]
    python -m bench.profile web …
    python -m bench.profile ingest …

Starts the end-to-end stack of :mod:`bench.e2e` with ``python -m bench``'s defaults (a
private Redis; relay's web under gunicorn with the Procfile's settings, 2 processes × 4
threads; 2 Celery workers of 16 threads; a local sink taking 50 ms per request), POSTs a
burst of ``--burst`` unique seed payloads on 16 keep-alive connections (closed loop,
``python -m bench.loadgen``) and, a second in, records ``--seconds`` with

    py-spy record --gil --nonblocking --subprocesses --rate 200 --format raw

either the first Celery worker (``worker``: one of the two that share the queue) or the
gunicorn master and its workers (``web``). ``ingest`` profiles the web with no Celery
worker running, as ``python -m bench ingest`` measures it: no routing or delivery competes
for the CPU, and nothing is delivered.

``--gil`` keeps only the thread that holds the GIL in each sample. Without it py-spy
samples every thread, also those blocked on a socket or a lock — most of a worker's
threads wait on the sink most of the time — and the profile shows where threads wait, not
where the CPU goes. ``--nonblocking`` samples without pausing the process (no slow-down,
the odd torn stack).

Prints the CPU seconds the profiled process tree used during the recording, how many
events were accepted and delivered (during the recording, and in all), then three views of
the samples, in % of all samples:

- top K functions by own time (the innermost frame of the stack);
- top K by total time (the function anywhere on the stack), leaving out the entry-point
  scaffolding every sample passes through (threading, runpy, click, Celery's start-up and
  consumer loop, the thread pool, gunicorn's arbiter);
- buckets: the innermost frame that belongs to a library (or to relay) claims the sample
  (these sum to 100 %), and the share of samples with that library anywhere on the stack.

File names are relative to site-packages, the standard library or the repository. Progress
goes to stderr. py-spy must be installed (``pip install py-spy``; exit status 2 when it is
not) and allowed to ptrace the processes (root, or CAP_SYS_PTRACE / kernel.yama.ptrace_scope
= 0; exit status 1 with py-spy's error when it fails).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT, Sink, cpu_seconds, process_tree
from bench.e2e import start_stack, stop_stack, wait_delivered
from bench.ingest import PATH, templates

#: ``python -m bench``'s defaults
STACK = {"workers": 2, "worker_concurrency": 16, "web_concurrency": 2, "web_threads": 4}
SINK_DELAY = 0.05  #: seconds the sink takes per request
CONNECTIONS = 16  #: closed-loop connections of the burst
WARMUP = 1.0  #: seconds of burst before the recording starts
RATE = 200  #: py-spy samples per second
DRAIN = 180.0  #: seconds to wait for the last deliveries after the recording

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
BUCKETS = [
    ("Celery/kombu/billiard/vine", re.compile(r"(^|/)(celery|kombu|billiard|vine|amqp)/")),
    (
        "requests/urllib3/http.client",
        re.compile(
            r"(^|/)(requests|urllib3|charset_normalizer|idna|certifi)/|(^|/)http/client\.py"
        ),
    ),
    ("redis-py", re.compile(r"(^|/)redis/")),
    ("json", re.compile(r"(^|/)json/|orjson|ujson")),
    ("logging", re.compile(r"(^|/)logging/|pythonjsonlogger")),
    ("prometheus_client", re.compile(r"(^|/)prometheus_client/")),
    ("Jinja/markupsafe", re.compile(r"(^|/)(jinja2|markupsafe)/")),
    ("Flask/Werkzeug", re.compile(r"(^|/)(flask|werkzeug)/")),
    ("gunicorn", re.compile(r"(^|/)gunicorn/")),
    ("marshmallow", re.compile(r"(^|/)marshmallow/")),
    ("yaml", re.compile(r"(^|/)yaml/")),
    ("relay (own code)", re.compile(r"(^|/)relay/")),
]
OTHER = "other (standard library: threading, socket, select …)"
SCAFFOLD = re.compile(
    r"\((threading\.py|<frozen runpy>|click/|celery/__main__\.py|celery/bin/|celery/bootsteps\.py"
    r"|celery/worker/worker\.py|celery/worker/consumer/consumer\.py|concurrent/futures/thread\.py"
    r"|gunicorn/app/|gunicorn/arbiter\.py|gunicorn/__main__\.py)"
)
#: directories file names are shown relative to, the longest (most specific) first
PREFIXES = sorted(
    {sysconfig.get_path(name) for name in ("purelib", "platlib", "stdlib", "platstdlib")}
    | {str(ROOT)},
    key=len,
    reverse=True,
)


def short(path: str) -> str:
    for prefix in PREFIXES:
        if path.startswith(prefix + "/"):
            return path[len(prefix) + 1 :]
    return path


def bucket_of(path: str) -> str | None:
    for name, pattern in BUCKETS:
        if pattern.search(path):
            return name
    return None


@dataclass
class Profile:
    """Sample counts by function (``name (file)``) and by bucket."""

    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)
    innermost: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def add(self, frames: list[tuple[str, str]], count: int) -> None:
        """One stack (outermost first) of ``(function (file), file)`` seen ``count`` times."""
        self.samples += count
        self.own[frames[-1][0]] += count
        for name in {name for name, _ in frames}:
            self.total[name] += count
        buckets = [bucket_of(path) for _, path in frames]
        self.innermost[next((b for b in reversed(buckets) if b), OTHER)] += count
        for bucket in set(buckets) - {None}:
            self.inclusive[bucket] += count


def aggregate(lines: Iterable[str]) -> Profile:
    """py-spy's ``--format raw`` (collapsed stacks: ``frame;frame;… count``) as a Profile;
    its ``process …`` / ``thread …`` pseudo-frames and stacks without a frame are dropped."""
    profile = Profile()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        frames = []
        for frame in stack.split(";") if stack else ():
            if frame.startswith(("process ", "thread ")):
                continue
            match = FRAME.match(frame)
            path = short(match["file"]) if match else ""
            frames.append((f"{match['func']} ({path})" if match else frame, path))
        if frames:
            profile.add(frames, int(count))
    return profile


def render(profile: Profile, top: int) -> list[str]:
    """The three sections (see the module doc)."""
    n = max(profile.samples, 1)

    def pct(count: int) -> str:
        return f"{100 * count / n:5.1f}%"

    out = [f"top {top} by own time (the innermost frame)", f"{'own':>6} {'total':>6}  function"]
    for name, count in profile.own.most_common(top):
        out.append(f"{pct(count)} {pct(profile.total[name])}  {name}")
    out += [
        "",
        f"top {top} by total time (anywhere on the stack; entry-point scaffolding left out)",
        f"{'total':>6} {'own':>6}  function",
    ]
    rows = [(name, c) for name, c in profile.total.most_common() if not SCAFFOLD.search(name)]
    for name, count in rows[:top]:
        out.append(f"{pct(count)} {pct(profile.own[name])}  {name}")
    out += ["", "buckets: innermost frame of the bucket (sums to 100%) / anywhere on the stack"]
    for bucket, count in profile.innermost.most_common():
        anywhere = pct(profile.inclusive[bucket]) if bucket in profile.inclusive else "     —"
        out.append(f"{pct(count)} {anywhere}  {bucket}")
    return out


def find_py_spy() -> str | None:
    """py-spy next to this interpreter (a virtualenv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def start_burst(port: int, count: int) -> subprocess.Popen:
    """``python -m bench.loadgen`` POSTing ``count`` unique seed payloads (closed loop); its
    JSON result is read from its stdout when it is done."""
    spec = {
        "port": port,
        "path": PATH,
        "templates": templates(),
        "collect": True,
        "mode": "closed",
        "count": count,
        "concurrency": CONNECTIONS,
        "nonce": os.urandom(4).hex(),
    }
    with tempfile.TemporaryFile("w+") as stdin:  # a file: nothing left to write later
        json.dump(spec, stdin)
        stdin.seek(0)
        return subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("role", choices=["worker", "web", "ingest"], help="the process to profile")
    parser.add_argument("--burst", type=int, default=6000, help="events POSTed")
    parser.add_argument("--seconds", type=int, default=10, help="length of the recording")
    parser.add_argument("--top", type=int, default=15, help="rows of the two function tables")
    parser.add_argument("--raw", metavar="PATH", help="keep py-spy's collapsed stacks there")
    return parser.parse_args(argv)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    py_spy = find_py_spy()
    if py_spy is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    raw = args.raw
    if raw is None:
        handle, raw = tempfile.mkstemp(prefix="relay-profile-", suffix=".raw")
        os.close(handle)  # py-spy writes it
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sink = Sink(delay=SINK_DELAY)
    stack = burst = None
    try:
        progress("profile: starting the stack …")
        ingest = args.role == "ingest"
        stack = start_stack(sink, **{**STACK, "workers": 0} if ingest else STACK)
        target = stack.workers[0].pid if args.role == "worker" else stack.web.pid
        progress(f"profile: burst of {args.burst} POSTs; recording {args.role} for {args.seconds}s")
        burst = start_burst(stack.port, args.burst)
        time.sleep(WARMUP)
        pids = process_tree(target)
        command = [py_spy, "record", "--pid", str(target), "--gil", "--nonblocking"]
        command += ["--subprocesses", "--rate", str(RATE), "--format", "raw"]
        command += ["--duration", str(args.seconds), "--output", raw]
        before, start = cpu_seconds(pids), time.monotonic()
        spy = subprocess.run(command, capture_output=True, text=True, check=False)
        used, end = cpu_seconds(pids) - before, time.monotonic()
        if spy.returncode != 0:
            print(spy.stderr.strip() or f"py-spy exited {spy.returncode}", file=sys.stderr)
            return 1
        out, err = burst.communicate()
        if burst.returncode != 0:
            raise RuntimeError(f"load generator failed: {err.strip()[-2000:]}")
        result = json.loads(out)
        accepted = dict(result["accepted"])
        progress(f"profile: {len(accepted)} accepted; waiting for the deliveries …")
        expected = set() if ingest else {f"{i}:hook" for i in accepted}
        missing = wait_delivered(sink, expected, DRAIN)
        with sink.lock:
            delivered = list(sink.first_ok.values())
        with open(raw) as f:
            profile = aggregate(f)
    except KeyboardInterrupt:
        progress("profile: interrupted")
        return 130
    finally:
        if burst is not None and burst.poll() is None:
            burst.kill()
            burst.communicate()
        if stack is not None:
            stop_stack(stack)
        sink.close()
        if not args.raw:
            Path(raw).unlink(missing_ok=True)

    wall = end - start
    what = {
        "worker": "the first of 2 Celery workers",
        "web": "gunicorn master + workers",
        "ingest": "gunicorn master + workers, no Celery worker running",
    }[args.role]
    report = [
        f"relay profile: {args.role} — {what}, processes {' '.join(map(str, pids))}",
        f"{os.cpu_count()} cores, load average {loadavg} at start",
        f"py-spy {' '.join(command[1:-2])}",
        f"recording: {wall:.1f} s, {used:.1f} CPU s in the profiled processes "
        f"({used / wall:.2f} cores); {profile.samples} samples with a thread on the GIL",
        f"burst: {len(accepted)} of {result['sent']} POSTs accepted "
        f"({sum(start <= t <= end for t in accepted.values())} sent during the recording), "
        f"{len(delivered)} delivered ({sum(start <= t <= end for t in delivered)} during the "
        f"recording), {len(missing)} still undelivered after waiting up to {DRAIN:g} s",
    ]
    busy_until = result["last_done"] if args.role != "worker" else max(delivered, default=start)
    if busy_until < end - 0.5:
        report.append(
            f"note: the {args.role} ran out of work {end - busy_until:.1f} s before the "
            "recording ended; a larger --burst keeps it busy throughout"
        )
    print("\n".join([*report, "", *render(profile, args.top)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
