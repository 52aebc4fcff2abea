"""The rules engine: load a rules file (config/README.md) strictly, match events purely.

::

    ruleset = load_rules("config/rules.yaml")      # RulesError lists every problem
    for hit in ruleset.match(event):                # [RouteMatch(route, destinations, retry)]
        ...
    text = render(destination.text, event, hit.route, name)   # TemplateError on failure
"""

from relay.errors import TemplateBudgetError, TemplateError
from relay.rules.loader import DestinationChecks, describe, load_rules, load_rules_text
from relay.rules.model import (
    Destination,
    EmailDestination,
    HttpDestination,
    LogDestination,
    Route,
    RouteMatch,
    Ruleset,
    Signing,
    SlackDestination,
    SmsReplyDestination,
)
from relay.rules.payloads import Structured
from relay.rules.retry import DEFAULT_RETRY, RetryPolicy
from relay.rules.templates import Template, render
from relay.times import format_duration, parse_duration

__all__ = [
    "DEFAULT_RETRY",
    "Destination",
    "DestinationChecks",
    "EmailDestination",
    "HttpDestination",
    "LogDestination",
    "RetryPolicy",
    "Route",
    "RouteMatch",
    "Ruleset",
    "Signing",
    "SlackDestination",
    "SmsReplyDestination",
    "Structured",
    "Template",
    "TemplateBudgetError",
    "TemplateError",
    "describe",
    "format_duration",
    "load_rules",
    "load_rules_text",
    "parse_duration",
    "render",
]
