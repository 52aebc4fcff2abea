"""Settings, built once from ``RELAY_*`` environment variables, validated and frozen
(and whether the standard ``OTEL_*`` variables turn traces on: ``relay.tracing``).

A bad value raises :class:`relay.errors.SettingsError` naming the variable; the command
line turns it into one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from relay import tracing
from relay.errors import SettingsError
from relay.redis_url import PLAIN_SCHEMES, SENTINEL_SCHEMES, is_sentinel, parse_sentinel_url
from relay.times import parse_duration

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  #: bytes: a full batch (1,000) of typical receipts fits
DEFAULT_DEDUPE_TTL = "24h"
DEFAULT_HISTORY_TTL = "7d"
DEFAULT_VISIBILITY_TIMEOUT = "5m"  #: broker redelivers a task unacked this long
DEFAULT_ENQUEUE_TIMEOUT = "1.5s"  #: budget of one Redis/broker call on the request path
DEFAULT_REPLICA_TIMEOUT = "500ms"  #: how long an accept waits for replicas to confirm it
DEFAULT_WEBEX_API_URL = "https://api.us.webexconnect.io"
DEFAULT_SLACK_API_URL = "https://slack.com/api"
MIN_TOKEN_LENGTH = 16  #: characters: the shortest admin or viewer token accepted
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = field(default=None, repr=False)
    redis_sentinel_password: str | None = field(default=None, repr=False)
    #: replicas that must confirm an accepted event (or an operator's write) before it is
    #: answered; default 1 with Sentinel, else 0
    redis_min_replicas: int = 0
    redis_replica_timeout: float = 0.5  #: seconds WAIT gives the replicas
    broker_url: str | None = field(default=None, repr=False)
    amqp_quorum: bool = False  #: declare relay's RabbitMQ queues as quorum queues
    rules_path: str = "config/rules.yaml"
    data_dir: str = "./var"
    webex_hub_secret: str | None = field(default=None, repr=False)
    webex_hub_algorithm: str = "auto"
    admin_token: str | None = field(default=None, repr=False)
    viewer_token: str | None = field(default=None, repr=False)  #: read-only console and API
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    dedupe_ttl: float = 86400.0
    history_ttl: float = 7 * 86400.0
    dead_letter_ttl: float = 30 * 86400.0
    dead_letter_max: int = 100_000
    poison_after: int = 3
    opt_out_words: frozenset[str] = field(default_factory=frozenset)
    opt_in_words: frozenset[str] = field(default_factory=frozenset)
    smtp_url: str | None = field(default=None, repr=False)
    mail_from: str = "relay@localhost"
    webex_api_url: str = DEFAULT_WEBEX_API_URL
    webex_service_key: str | None = field(default=None, repr=False)
    webex_key_header: str = "Authorization"
    slack_api_url: str = DEFAULT_SLACK_API_URL
    own_numbers: frozenset[str] = frozenset()
    log_format: str = "console"
    visibility_timeout: float = 300.0
    enqueue_timeout: float = 1.5
    worker_concurrency: int = 8
    worker_pool: str = "threads"
    ingest_basic_auth: str | None = field(default=None, repr=False)  #: "user:password"
    ingest_api_key_header: str | None = None
    ingest_api_key: str | None = field(default=None, repr=False)
    require_auth: bool = False
    allow_unauthenticated: bool = False  #: serve callbacks with no authentication method
    read_timeout: float = 10.0  #: seconds a client has to send a whole request
    max_event_age: float = 0.0  #: seconds; older notifications are refused (0: off)
    log_pii: bool = False
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "127.0.0.1"
    intake_threads: int = 64
    sole_worker: bool = False  #: set by ``relay up``: no other worker shares this Redis
    #: OpenTelemetry traces on: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT set, OTEL_SDK_DISABLED
    #: not true (``relay.tracing``; the OTEL_* variables are the SDK's to read)
    traces: bool = False

    @property
    def ingest_auth_configured(self) -> bool:
        """True when at least one way of authenticating webhook callbacks is set."""
        return bool(self.webex_hub_secret or self.ingest_basic_auth or self.ingest_api_key)

    @property
    def effective_broker_url(self) -> str | None:
        return self.broker_url or self.redis_url

    def require_redis(self) -> str:
        """The state Redis URL, or a SettingsError saying how to get one."""
        if not self.redis_url:
            raise SettingsError(
                "RELAY_REDIS_URL", "not set (set it, or run `relay up` here for the embedded Redis)"
            )
        return self.redis_url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    reader = _Reader(env)
    redis_url = reader.redis_url("RELAY_REDIS_URL")
    sentinel = redis_url is not None and is_sentinel(redis_url)
    settings = Settings(
        redis_url=redis_url,
        redis_sentinel_password=reader.optional("RELAY_REDIS_SENTINEL_PASSWORD"),
        redis_min_replicas=reader.integer("RELAY_REDIS_MIN_REPLICAS", 1 if sentinel else 0, 0),
        redis_replica_timeout=reader.duration(
            "RELAY_REDIS_REPLICA_TIMEOUT", DEFAULT_REPLICA_TIMEOUT, minimum=0.001
        ),
        broker_url=reader.url(
            "RELAY_BROKER_URL", ("redis", "rediss", "amqp", "amqps", "pyamqp", "redis+socket")
        ),
        amqp_quorum=reader.flag("RELAY_AMQP_QUORUM"),
        rules_path=reader.text("RELAY_RULES", "config/rules.yaml"),
        data_dir=reader.text("RELAY_DATA_DIR", "./var"),
        webex_hub_secret=reader.optional("RELAY_WEBEX_HUB_SECRET"),
        webex_hub_algorithm=reader.choice(
            "RELAY_WEBEX_HUB_ALGORITHM", ("auto", "sha256", "sha512"), "auto"
        ),
        admin_token=reader.optional("RELAY_ADMIN_TOKEN"),
        viewer_token=reader.optional("RELAY_VIEWER_TOKEN"),
        max_body_bytes=reader.integer("RELAY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 256),
        dedupe_ttl=reader.duration("RELAY_DEDUPE_TTL", DEFAULT_DEDUPE_TTL),
        history_ttl=reader.duration("RELAY_HISTORY_TTL", DEFAULT_HISTORY_TTL),
        dead_letter_ttl=reader.duration("RELAY_DEAD_LETTER_TTL", "30d", minimum=1.0),
        dead_letter_max=reader.integer("RELAY_DEAD_LETTER_MAX", 100_000, 1),
        poison_after=reader.integer("RELAY_POISON_AFTER", 3, 1),
        opt_out_words=reader.words("RELAY_OPT_OUT_KEYWORDS"),
        opt_in_words=reader.words("RELAY_OPT_IN_KEYWORDS"),
        smtp_url=reader.url("RELAY_SMTP_URL", ("smtp", "smtps")),
        mail_from=reader.text("RELAY_MAIL_FROM", "relay@localhost"),
        webex_api_url=reader.url("RELAY_WEBEX_API_URL", ("http", "https")) or DEFAULT_WEBEX_API_URL,
        webex_service_key=reader.optional("RELAY_WEBEX_SERVICE_KEY"),
        webex_key_header=reader.header_name("RELAY_WEBEX_KEY_HEADER", "Authorization"),
        slack_api_url=reader.url("RELAY_SLACK_API_URL", ("http", "https")) or DEFAULT_SLACK_API_URL,
        own_numbers=reader.numbers("RELAY_OWN_NUMBERS"),
        log_format=reader.choice(
            "RELAY_LOG_FORMAT", ("json", "console"), "console" if sys.stderr.isatty() else "json"
        ),
        visibility_timeout=reader.duration(
            "RELAY_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT, minimum=2.0
        ),
        enqueue_timeout=reader.duration(
            "RELAY_ENQUEUE_TIMEOUT", DEFAULT_ENQUEUE_TIMEOUT, minimum=0.05
        ),
        worker_concurrency=reader.integer("RELAY_WORKER_CONCURRENCY", 8, 1),
        worker_pool=reader.choice(
            "RELAY_WORKER_POOL", ("threads", "prefork", "solo", "gevent", "eventlet"), "threads"
        ),
        ingest_basic_auth=reader.credentials("RELAY_INGEST_BASIC_AUTH"),
        ingest_api_key_header=reader.optional_header_name("RELAY_INGEST_API_KEY_HEADER"),
        ingest_api_key=reader.optional("RELAY_INGEST_API_KEY"),
        require_auth=reader.flag("RELAY_REQUIRE_AUTH"),
        allow_unauthenticated=reader.flag("RELAY_ALLOW_UNAUTHENTICATED"),
        read_timeout=reader.duration("RELAY_READ_TIMEOUT", "10s", minimum=0.5),
        max_event_age=reader.duration("RELAY_MAX_EVENT_AGE", "0"),
        log_pii=reader.flag("RELAY_LOG_PII"),
        worker_metrics_port=reader.port("RELAY_WORKER_METRICS_PORT"),
        worker_metrics_host=reader.text("RELAY_WORKER_METRICS_HOST", "127.0.0.1"),
        intake_threads=reader.integer("RELAY_WORKER_INTAKE_THREADS", 64, 1),
        sole_worker=reader.flag("RELAY_SOLE_WORKER"),
        traces=tracing.configured(env),
    )
    _check_ingest_auth(settings)
    _check_tokens(settings)
    _check_replication(settings)
    return settings


def _check_replication(settings: Settings) -> None:
    """WAIT must end before the call's own timeout, or a slow replica would look like a
    Redis that does not answer."""
    if settings.redis_min_replicas and settings.redis_replica_timeout >= settings.enqueue_timeout:
        raise SettingsError(
            "RELAY_REDIS_REPLICA_TIMEOUT",
            f"{settings.redis_replica_timeout:g}s must be below RELAY_ENQUEUE_TIMEOUT "
            f"({settings.enqueue_timeout:g}s)",
        )
    if settings.redis_sentinel_password and not (
        settings.redis_url and is_sentinel(settings.redis_url)
    ):
        raise SettingsError(
            "RELAY_REDIS_SENTINEL_PASSWORD", "set, but RELAY_REDIS_URL names no Sentinels"
        )


def _check_tokens(settings: Settings) -> None:
    """Tokens long enough not to be guessed (logins are throttled, not impossible). The
    read-only token needs the admin token (which turns the console on) and must differ
    from it: one value cannot be both read-only and not."""
    _check_length("RELAY_ADMIN_TOKEN", settings.admin_token)
    if settings.viewer_token is None:
        return
    if settings.admin_token is None:
        raise SettingsError(
            "RELAY_VIEWER_TOKEN", "set, but RELAY_ADMIN_TOKEN is not (the console and API are off)"
        )
    if settings.viewer_token == settings.admin_token:
        raise SettingsError("RELAY_VIEWER_TOKEN", "the same as RELAY_ADMIN_TOKEN (value not shown)")
    _check_length("RELAY_VIEWER_TOKEN", settings.viewer_token)


def _check_length(name: str, token: str | None) -> None:
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise SettingsError(
            name, f"shorter than {MIN_TOKEN_LENGTH} characters (value not shown): use a random one"
        )


def _check_ingest_auth(settings: Settings) -> None:
    """The API key needs both its variables; no two methods may need the same header."""
    if settings.ingest_api_key_header and not settings.ingest_api_key:
        raise SettingsError("RELAY_INGEST_API_KEY", "not set, but RELAY_INGEST_API_KEY_HEADER is")
    if settings.ingest_api_key and not settings.ingest_api_key_header:
        raise SettingsError("RELAY_INGEST_API_KEY_HEADER", "not set, but RELAY_INGEST_API_KEY is")
    header = (settings.ingest_api_key_header or "").lower()
    if header == "authorization" and settings.ingest_basic_auth:
        raise SettingsError(
            "RELAY_INGEST_API_KEY_HEADER",
            "Authorization carries RELAY_INGEST_BASIC_AUTH; name another header",
        )
    if header == "x-hub-signature" and settings.webex_hub_secret:
        raise SettingsError(
            "RELAY_INGEST_API_KEY_HEADER",
            "x-hub-signature carries the RELAY_WEBEX_HUB_SECRET signature; name another header",
        )


def digits(number: object) -> str:
    """A phone number or short code reduced to its digits (``+44 7700-900`` → ``447700900``)."""
    return "".join(ch for ch in str(number) if ch.isdigit())


class _Reader:
    """Reads one variable at a time; every failure names the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def optional(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = (self.optional(name) or default).lower()
        if value not in choices:
            raise SettingsError(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def integer(self, name: str, default: int, minimum: int) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(name, f"{raw!r} is not a whole number") from None
        if value < minimum:
            raise SettingsError(name, f"{value} is below the minimum {minimum}")
        return value

    def duration(self, name: str, default: str, minimum: float = 0.0) -> float:
        raw = self.optional(name) or default
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            raise SettingsError(name, str(exc)) from None
        if value < minimum:
            raise SettingsError(name, f"{raw!r} is below the minimum {minimum:g}s")
        return value

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        raw = self.optional(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise SettingsError(
                name, f"scheme {parts.scheme or '(none)'!r} is not one of {', '.join(schemes)}"
            )
        if parts.scheme not in ("unix", "redis+socket") and not parts.hostname:
            raise SettingsError(name, "has no host")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise SettingsError(name, "has an invalid port") from None
        return raw

    def redis_url(self, name: str) -> str | None:
        """A single server's URL, or a Sentinel URL (``relay.redis_url``); a bad one is
        described without its password."""
        raw = self.optional(name)
        if raw is None or not is_sentinel(raw):
            return self.url(name, PLAIN_SCHEMES + SENTINEL_SCHEMES)
        try:
            parse_sentinel_url(raw)
        except ValueError as exc:
            raise SettingsError(name, str(exc)) from None
        return raw

    def header_name(self, name: str, default: str) -> str:
        return self.optional_header_name(name) or default

    def optional_header_name(self, name: str) -> str | None:
        value = self.optional(name)
        if value is not None and not _HEADER_NAME.match(value):
            raise SettingsError(name, f"{value!r} is not a valid HTTP header name")
        return value

    def credentials(self, name: str) -> str | None:
        """``user:password``; a bad value is described, never echoed (it is a secret)."""
        value = self.optional(name)
        if value is None:
            return None
        user, colon, password = value.partition(":")
        if not colon or not user or not password:
            raise SettingsError(name, "must be user:password, both non-empty (value not shown)")
        if any(ch < " " or ch == "\x7f" for ch in value):
            raise SettingsError(name, "contains control characters (value not shown)")
        return value

    def port(self, name: str) -> int | None:
        if self.optional(name) is None:
            return None
        value = self.integer(name, 0, 1)
        if value > 65535:
            raise SettingsError(name, f"{value} is not a TCP port (1-65535)")
        return value

    def flag(self, name: str) -> bool:
        value = (self.optional(name) or "0").lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise SettingsError(name, f"{value!r} is not one of 1, 0, true, false, yes, no, on, off")

    def words(self, name: str) -> frozenset[str]:
        """A comma list of words or phrases, as opt-out words are compared (upper case,
        accents and punctuation dropped)."""
        raw = self.optional(name) or ""
        plain = (unicodedata.normalize("NFKD", item) for item in raw.split(","))
        return frozenset(
            " ".join(
                "".join(c if c.isalnum() else " " for c in p if not unicodedata.combining(c))
                .upper()
                .split()
            )
            for p in plain
            if p.strip()
        )

    def numbers(self, name: str) -> frozenset[str]:
        raw = self.optional(name)
        if raw is None:
            return frozenset()
        items = [item.strip() for item in raw.split(",") if item.strip()]
        bad = [item for item in items if not digits(item)]
        if bad:
            raise SettingsError(name, f"{bad[0]!r} is not a phone number or short code")
        return frozenset(digits(item) for item in items)
