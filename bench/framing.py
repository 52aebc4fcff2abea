"""Framing fuzz: 10,000 and more requests framed wrong, against relay's web process.

The cases of ``tests/web/framing_fuzz.py`` (the same generator ``make test`` runs a few
hundred of): three right requests cut at every point, then ``cases`` seeded ones with
chunk sizes negative, hex-prefixed, huge or padded, chunk extensions, trailers,
Content-Length conflicts and duplicates, both framings, pipelining, ``Expect:
100-continue``, bare LF and CR line ends, folded lines, a byte changed or the request cut
short. Each on its own connection, ``threads`` at a time, against relay's web under
gunicorn with the Procfile's settings (no Celery worker).

Counts the answers by status, and the failures (target 0): crashes (an answer other than
200 or 4xx, an answer that is not HTTP, a refused connection, a traceback or a replaced
worker in the web's log) and hangs (a connection that did not end within 10 s, or
``/healthz`` not answering after the run).

    python -m bench framing [--framing-cases N] [--framing-seed S]
"""

from __future__ import annotations

import shutil

from bench.common import Stack
from bench.ingest import RULES
from tests.web import framing_fuzz

DEFAULT_CASES = 10_000
DEFAULT_SEED = 7


def run(
    cases: int = DEFAULT_CASES,
    seed: int = DEFAULT_SEED,
    threads: int = 8,
    web_concurrency: int = 2,
    web_threads: int = 4,
    keep: bool = False,
    progress=print,
) -> dict:
    """The fuzz's figures (see the module docstring)."""
    stack = Stack(
        RULES, workers=0, env={"WEB_THREADS": str(web_threads)}, web_workers=web_concurrency
    )
    try:
        todo = framing_fuzz.cases(seed, cases)
        progress(f"  framing: {len(todo):,} cases against :{stack.port} …")
        report = framing_fuzz.run(stack.port, todo, threads)
        unhealthy = framing_fuzz.unhealthy(stack.port)
        alarms = framing_fuzz.log_alarms((stack.dir / "web.log").read_text(), web_concurrency)
    finally:
        stack.close()
        if not keep:
            shutil.rmtree(stack.dir, ignore_errors=True)
    hangs = report.hangs + (unhealthy is not None)
    crashes = len(report.problems) - report.hangs + len(alarms)
    problems = [f"{case.name}: {problem}: {case.data[:120]!r}" for case, problem in report.problems]
    return {
        "cases": report.cases,
        "seed": seed,
        "threads": threads,
        "statuses": {str(status): n for status, n in sorted(report.statuses.items())},
        "unanswered": report.unanswered,
        "crashes": crashes,
        "hangs": hangs,
        "seconds": report.seconds,
        "problems": ([unhealthy] if unhealthy else [])
        + [alarm[:200] for alarm in alarms[:10]]  # a log line may hold a whole traceback
        + problems[:10],
    }


def details(fz: dict, s: dict) -> list[str]:
    """The fuzz's lines for ``python -m bench``'s table."""
    statuses = ", ".join(f"{status}: {n:,}" for status, n in fz["statuses"].items())
    lines = [
        f"framing fuzz: {fz['cases']:,} cases (seed {fz['seed']}) in {fz['seconds']:.1f} s, "
        f"{fz['threads']} connections at a time, against relay's web (gunicorn "
        f"{s['web_concurrency']} × {s['web_threads']}); each case on a connection of its own",
        f"  answers: {statuses}; closed with no answer (requests cut short): {fz['unanswered']:,}",
        f"  crashes: {fz['crashes']}, hangs: {fz['hangs']}",
    ]
    lines += [f"  {problem}" for problem in fz["problems"]]
    return lines
