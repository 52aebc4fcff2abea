"""The webhook fuzz of ``python -m bench fuzz``, smaller: mutated bodies (documented
variants; dropped, renamed and retyped keys; lone surrogates, NaN, 1e999, 2**70, deep
nesting, control characters, template syntax; truncation, byte flips, batches) posted
through a running relay (its own Redis, the web under gunicorn, a Celery worker, a local
sink). No 5xx, no routing error in the worker's log, and every accepted event delivered
or dead-lettered with a reason within 60 s of the last POST.
"""

from __future__ import annotations

import json

import pytest

from bench import fuzz

pytestmark = pytest.mark.e2e

BODIES = 2000


def test_the_bodies_cover_what_the_fuzz_promises():
    posted = list(fuzz.bodies(BODIES))
    assert len(set(posted)) > BODIES * 0.95
    joined = b"\n".join(posted)
    for needle in (b"\\ud800", b"\xed\xa0\x80", b"NaN", b"1e999", b"[[[[", b"{{ 7*7 }}"):
        assert needle in joined, needle
    assert any(body.startswith(b"[") for body in posted)  # batches
    assert sum(1 for body in posted if _not_json(body)) > BODIES * 0.02  # cut, flipped


def _not_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


@pytest.mark.timeout(110)
# the bench's stack opens each process's log file for it and leaves it to the process
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_every_mutated_body_is_answered_4xx_or_accepted_and_every_accepted_event_ends():
    result = fuzz.run(count=BODIES, drain=fuzz.DRAIN, progress=lambda line: None)
    statuses = result["statuses"]
    assert set(statuses) <= {"200", "400", "413"}, statuses
    assert statuses["200"] > BODIES * 0.2 and statuses["400"] > BODIES * 0.2, statuses
    assert result["connection_errors"] == 0
    assert result["routing_errors"] == 0, result["routing_error_examples"]
    assert result["lost"] == 0, result["lost_examples"]
    assert result["delivered"] + sum(result["dead_lettered"].values()) == result["accepted"]
