"""The one exception tree of relay.

::

    RelayError
    ├── ConfigError            settings or rules invalid
    │   ├── SettingsError      one RELAY_* variable: names it
    │   └── RulesError         a rules file: every problem as "file:line: path: message"
    ├── IngestError            → a 4xx answer through the web's one error handler
    │   ├── SignatureError     401 (the answer names no check)
    │   ├── PayloadError       400, names the field
    │   ├── RequestError       400 (or another 4xx) of the admin API, names the field
    │   ├── TooLargeError      413
    │   └── UnsupportedMediaError 415
    ├── UnavailableError       → 503 with Retry-After: Redis/broker not reachable in time
    │   └── NotReplicatedError written, but fewer replicas confirmed it than required
    └── DeliveryError          destination, attempt, status
        ├── TransientDeliveryError   retried
        └── PermanentDeliveryError   dead-lettered at once
"""

from __future__ import annotations


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


class IngestError(RelayError):
    """A request the web refuses: ``status``, ``code`` and (unless ``quiet``) the detail
    and the field at fault go into the JSON answer."""

    status = 400
    code = "invalid_payload"
    quiet = False  #: True: the answer carries the code only (authentication failures)

    def __init__(
        self, detail: object = None, field: str | None = None, status: int | None = None
    ) -> None:
        self.detail = detail
        self.field = field
        if status is not None:
            self.status = status
        super().__init__(str(detail) if detail is not None else self.code)


class PayloadError(IngestError):
    status = 400
    code = "invalid_payload"


class SignatureError(IngestError):
    status = 401
    code = "invalid_signature"
    quiet = True


class RequestError(IngestError):
    """A bad request to the admin API."""

    code = "invalid_request"


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


class DeliveryError(RelayError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class TransientDeliveryError(DeliveryError):
    """Worth another try later."""


class PermanentDeliveryError(DeliveryError):
    """Will never succeed as is: dead-letter at once."""
