"""What Celery logs when a Redis failover breaks its connection is one warning line, with
no traceback (relay.worker.lifecycle); everything else it logs is left as it is."""

from __future__ import annotations

import logging
import sys

import redis
from celery.exceptions import Reject

from relay.worker.lifecycle import outage_without_traceback


def record(level: int, msg: str, exc: BaseException | None) -> logging.LogRecord:
    info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            info = sys.exc_info()
    return logging.LogRecord("celery", level, __file__, 1, msg, (1, exc), info)


def test_an_ack_lost_with_its_connection_is_a_warning_without_traceback():
    lost = record(logging.CRITICAL, "Couldn't ack %r, reason:%r", redis.ConnectionError("gone"))
    assert outage_without_traceback(lost)
    assert (lost.levelname, lost.exc_info) == ("WARNING", None)


def test_a_task_giving_its_message_back_has_no_traceback():
    rejected = record(logging.WARNING, "Task %s[%s] reject", Reject("redis: gone", requeue=True))
    assert outage_without_traceback(rejected)
    assert rejected.exc_info is None


def test_other_errors_keep_their_traceback_and_level():
    bug = record(logging.CRITICAL, "Couldn't ack %r, reason:%r", KeyError("a bug"))
    other = record(logging.ERROR, "Task failed", redis.ConnectionError("gone"))
    for kept in (bug, other):
        level, info = kept.levelname, kept.exc_info
        assert outage_without_traceback(kept)
        assert (kept.levelname, kept.exc_info) == (level, info)
