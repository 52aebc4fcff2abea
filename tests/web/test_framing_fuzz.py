"""A framing fuzz against the real web process (tests/web/framing_fuzz.py): three right
requests cut at every point, and a few hundred requests framed wrong in one or two ways
(chunk sizes negative, hex-prefixed, huge or padded, chunk extensions, trailers,
Content-Length conflicts and duplicates, both framings, pipelining, Expect: 100-continue,
bare LF and CR, folded lines, a byte changed or the request cut short). Each answer is
200 or a 4xx, each connection ends, and the process goes on answering without a
traceback or a replaced worker. ``python -m bench framing`` runs 10,000 and more.
"""

from __future__ import annotations

from tests.harness import web_process
from tests.web.framing_fuzz import cases, log_alarms, run, unhealthy

SEED = 20260607
GENERATED = 300


def test_every_framing_gets_200_or_a_4xx_and_the_process_keeps_answering(redis_server, tmp_path):
    log = tmp_path / "web.log"
    with web_process(redis_server.url, log, WEB_CONCURRENCY="1", WEB_THREADS="2") as port:
        report = run(port, cases(SEED, GENERATED), threads=4)
        health = unhealthy(port)
        alarms = log_alarms(log.read_text(), workers=1)
    problems = [
        f"{case.name}: {problem} ({case.data[:200]!r})" for case, problem in report.problems
    ]
    assert not problems, f"{report.summary()}\n" + "\n".join(problems[:10])
    assert health is None, health
    assert not alarms, "\n".join(alarms[:10])
    assert report.cases > 600 and report.statuses[200] and report.statuses[400]
