"""Delivery actions: each sends one rendered delivery and returns an :class:`Outcome`.

The task layer maps outcomes to retries or dead letters with :func:`should_retry` and
:func:`next_delay`; actions themselves never retry.
"""

from relay.actions.base import (
    DEFAULT_MAX_RETRY_AFTER,
    Kind,
    Outcome,
    RetryPolicy,
    backoff,
    classify_http,
    next_delay,
    parse_retry_after,
    should_retry,
)
from relay.actions.http import (
    USER_AGENT,
    Signer,
    close_session,
    content_type_for,
    get_session,
    send_http,
)
from relay.actions.log import send_log

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "USER_AGENT",
    "Kind",
    "Outcome",
    "RetryPolicy",
    "Signer",
    "backoff",
    "classify_http",
    "close_session",
    "content_type_for",
    "get_session",
    "next_delay",
    "parse_retry_after",
    "send_http",
    "send_log",
    "should_retry",
]
