"""The one exception tree of relay.

::

    RelayError
    ├── ConfigError            settings or rules invalid
    │   ├── SettingsError      one RELAY_* variable: names it
    │   ├── RulesError         a rules file: every problem as "file:line: path: message"
    │   │   └── CasesError     a rule cases file, the same way
    │   ├── ConditionError     a route's ``match`` that does not compile: every problem
    │   └── RuleValueError     one value of a rules file (its reader makes it a line)
    ├── TemplateError          a template that does not compile or render (``lineno``)
    │   └── TemplateBudgetError  a render past its budget
    ├── BudgetSpentError       the sandbox stopping a render (made a TemplateBudgetError)
    ├── IngestError            → a 4xx answer through the web's one error handler
    │   ├── SignatureError     401 (the answer names no check)
    │   ├── UnauthorizedError  401: Basic credentials, the API key or a bearer token
    │   ├── ForbiddenError     403: a viewer asking to change something
    │   ├── NotFoundError      404: an unknown id or name
    │   │   └── UnknownDestinationError  no destination of that name in the rules
    │   ├── TooManyLoginsError 429 with Retry-After: wrong tokens from this address
    │   ├── PayloadError       400, names the field
    │   ├── FramingError       400: a request's framing refused
    │   ├── RequestError       400 (or another 4xx) of the admin API, names the field
    │   │   ├── QueryError     a bad search parameter
    │   │   └── CursorError    a cursor this server did not give
    │   ├── RequestTimeoutError 408: a request not whole in time
    │   ├── TooLargeError      413
    │   └── UnsupportedMediaError 415
    └── UnavailableError       → 503 with Retry-After: Redis/broker not reachable in time
        └── NotReplicatedError written, but fewer replicas confirmed it than required

The operators' tools (``relay.ops``) raise the admin API's errors (:class:`QueryError`,
:class:`CursorError`, :class:`UnknownDestinationError`): the web answers them through its
one handler, the command line as one line naming the field or the name. A failed delivery
is no exception: it is an outcome (``relay.actions.Outcome``), never raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RelayError(Exception):
    """Base of every error relay raises on purpose."""


class ConfigError(RelayError):
    """Settings or rules are invalid."""


class SettingsError(ConfigError):
    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        self.message = message
        super().__init__(f"{variable}: {message}")


class RulesError(ConfigError):
    """A rules file failed to load; ``errors`` holds every "file:line: path: message"."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class CasesError(RulesError):
    """A cases file could not be used; ``errors`` holds every ``FILE:LINE: where: what``."""


class ConditionError(ConfigError, ValueError):
    """A condition could not be compiled; ``problems`` lists every fault (each with its
    ``message``: ``relay.rules.matcher.ConditionProblem``)."""

    def __init__(self, problems: list[Any]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


class RuleValueError(ConfigError):
    """The value at hand in a rules file is wrong; the message says how (the reader,
    ``relay.rules.reader``, reports it at the value's line)."""


class TemplateError(RelayError):
    """A template failed to compile (``lineno`` set, 1-based in the template) or to render."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        self.message = message
        self.lineno = lineno
        super().__init__(message)


class TemplateBudgetError(TemplateError):
    """A render went past its budget (:mod:`relay.rules.sandbox`): the template's fault,
    whatever the event."""


class BudgetSpentError(RelayError):
    """A render went past its budget; the message says which part (made a
    :class:`TemplateBudgetError` by the template that was rendering)."""


class IngestError(RelayError):
    """A request the web refuses: ``status``, ``code`` and (unless ``quiet``) the detail
    and the field at fault go into the JSON answer."""

    status = 400
    code = "invalid_payload"
    quiet = False  #: True: the answer carries the code only (authentication failures)
    #: headers of the answer (a challenge, ``Retry-After``); None: the handler's own
    headers: Mapping[str, str] | None = None

    def __init__(
        self,
        detail: object = None,
        field: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.detail = detail
        self.field = field
        if status is not None:
            self.status = status
        if headers is not None:
            self.headers = headers
        super().__init__(str(detail) if detail is not None else self.code)


class PayloadError(IngestError):
    status = 400
    code = "invalid_payload"


class SignatureError(IngestError):
    status = 401
    code = "invalid_signature"
    quiet = True


class UnauthorizedError(IngestError):
    """Basic credentials, the API key or the admin API's bearer token missing or wrong
    (401)."""

    status = 401
    code = "unauthorized"
    quiet = True


class ForbiddenError(IngestError):
    """Known credentials that may not do this (403)."""

    status = 403
    code = "forbidden"


class NotFoundError(IngestError):
    """An unknown id or name (404); the detail names it."""

    status = 404
    code = "not_found"


class UnknownDestinationError(NotFoundError):
    """No destination of that name in the rules."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no destination {name!r} in the rules")
        self.name = name


class TooManyLoginsError(IngestError):
    """Too many failed logins from this client address (429, ``Retry-After``)."""

    status = 429
    code = "too_many_requests"

    def __init__(self, wait: int) -> None:
        detail = f"too many failed logins from this address: try again in {wait} s"
        super().__init__(detail, headers={"Retry-After": str(wait)})


class FramingError(IngestError):
    """A request whose framing relay refuses (400)."""

    status = 400
    code = "bad_request"


class RequestTimeoutError(IngestError):
    """A request not whole within ``RELAY_READ_TIMEOUT`` (408)."""

    status = 408
    code = "request_timeout"


class RequestError(IngestError):
    """A bad request to the admin API."""

    code = "invalid_request"


class QueryError(RequestError, ValueError):
    """A bad search parameter: ``field`` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message, field)


class CursorError(RequestError, ValueError):
    """A cursor this server did not give."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "cursor")


class TooLargeError(IngestError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaError(IngestError):
    status = 415
    code = "unsupported_media_type"


class UnavailableError(RelayError):
    """Redis or the broker did not answer in time."""


class NotReplicatedError(UnavailableError):
    """The primary took the write, but fewer replicas than ``RELAY_REDIS_MIN_REPLICAS``
    confirmed it in time: it may vanish in a failover, so it is not acknowledged."""
