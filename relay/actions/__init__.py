"""Delivery actions: each sends one rendered delivery and returns an :class:`Outcome`.

One module per destination type (``http``, ``log``, ``email``, ``slack``, ``sms``) and
:mod:`relay.actions.registry`, which maps type names to them. The task layer maps
outcomes to retries or dead letters with :func:`should_retry` and :func:`next_delay`
(under a :class:`relay.rules.RetryPolicy`); actions themselves never retry.
"""

from relay.actions.base import (
    DEFAULT_MAX_RETRY_AFTER,
    Kind,
    Outcome,
    backoff,
    classify_http,
    next_delay,
    parse_retry_after,
    should_retry,
)
from relay.actions.email import SmtpTarget, parse_smtp_url, send_email
from relay.actions.http import USER_AGENT, Signer, content_type_for, send_http
from relay.actions.log import send_log
from relay.actions.sessions import close_session, get_session
from relay.actions.slack import build_payload, send_slack_api, send_slack_webhook
from relay.actions.sms import content_type_for_text, send_sms

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "USER_AGENT",
    "Kind",
    "Outcome",
    "Signer",
    "SmtpTarget",
    "backoff",
    "build_payload",
    "classify_http",
    "close_session",
    "content_type_for",
    "content_type_for_text",
    "get_session",
    "next_delay",
    "parse_retry_after",
    "parse_smtp_url",
    "send_email",
    "send_http",
    "send_log",
    "send_slack_api",
    "send_slack_webhook",
    "send_sms",
    "should_retry",
]
