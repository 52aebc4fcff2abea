"""Settings from RELAY_* variables: defaults, parsing, one clear line for a bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from relay.errors import SettingsError
from relay.settings import load_settings
from relay.times import parse_duration
from tests.harness import ROOT


def test_defaults_match_the_design():
    settings = load_settings({})
    assert settings.redis_url is None
    assert settings.rules_path == "config/rules.yaml"
    assert settings.data_dir == "./var"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.dedupe_ttl == 24 * 3600
    assert settings.history_ttl == 7 * 24 * 3600
    assert settings.webex_hub_algorithm == "auto"
    assert settings.mail_from == "relay@localhost"
    assert settings.webex_api_url == "https://api.us.webexconnect.io"
    assert settings.own_numbers == frozenset()


def test_values_are_parsed():
    settings = load_settings(
        {
            "RELAY_REDIS_URL": "redis://127.0.0.1:6390/2",
            "RELAY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
            "RELAY_DEDUPE_TTL": "10m",
            "RELAY_HISTORY_TTL": "36h",
            "RELAY_MAX_BODY_BYTES": "1024",
            "RELAY_OWN_NUMBERS": "+1 555 0100, 12345",
            "RELAY_WEBEX_HUB_ALGORITHM": "SHA512",
            "RELAY_LOG_FORMAT": "json",
        }
    )
    assert settings.effective_broker_url.startswith("amqp://")
    assert settings.dedupe_ttl == 600
    assert settings.history_ttl == 36 * 3600
    assert settings.max_body_bytes == 1024
    assert settings.own_numbers == frozenset({"15550100", "12345"})
    assert settings.webex_hub_algorithm == "sha512"


def test_secrets_are_not_in_the_repr():
    settings = load_settings(
        {"RELAY_ADMIN_TOKEN": "s3cret-admin-token", "RELAY_WEBEX_SERVICE_KEY": "s3cret-key"}
    )
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RELAY_DEDUPE_TTL", "soon", "bad duration 'soon'"),
        ("RELAY_HISTORY_TTL", "-1d", "bad duration"),
        ("RELAY_MAX_BODY_BYTES", "lots", "'lots' is not a whole number"),
        ("RELAY_MAX_BODY_BYTES", "10", "below the minimum 256"),
        ("RELAY_REDIS_URL", "http://localhost:6379", "scheme 'http' is not one of"),
        ("RELAY_REDIS_URL", "redis://", "has no host"),
        ("RELAY_REDIS_URL", "redis://localhost:99999", "invalid port"),
        ("RELAY_BROKER_URL", "kafka://x", "scheme 'kafka'"),
        ("RELAY_SMTP_URL", "mail://x", "scheme 'mail'"),
        ("RELAY_WEBEX_HUB_ALGORITHM", "md5", "'md5' is not one of auto, sha256, sha512"),
        ("RELAY_LOG_FORMAT", "xml", "'xml' is not one of json, console"),
        ("RELAY_OWN_NUMBERS", "12345,abc", "'abc' is not a phone number"),
        ("RELAY_VISIBILITY_TIMEOUT", "1s", "below the minimum"),
    ],
)
def test_bad_value_names_the_variable(variable, value, message):
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2),
        ("10m", 600),
        ("24h", 86400),
        ("7d", 604800),
        ("1.5s", 1.5),
        ("30", 30),
        (5, 5.0),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "1w", "-2s", "s", True])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("command", [["up"], ["web"], ["worker"]])
def test_commands_stop_with_one_line_naming_the_variable(command, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "RELAY_DEDUPE_TTL": "forever", "RELAY_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", *command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "relay: RELAY_DEDUPE_TTL: bad duration 'forever' "
        "(use 250ms, 2s, 10m, 24h, 7d, or a number of seconds)"
    ]


@pytest.mark.parametrize("command", [["web"], ["worker"]])
def test_production_processes_need_a_redis_url(command):
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", *command],
        env={"PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("relay: RELAY_REDIS_URL: not set")


def test_security_settings_default_to_safe_values():
    settings = load_settings({})
    assert settings.allow_unauthenticated is False  # the web tier refuses to start without auth
    assert settings.read_timeout == 10.0  # Webex Connect gives up after 10 s itself
    assert settings.max_event_age == 0.0  # the replay guard is off


def test_security_settings_are_parsed():
    settings = load_settings(
        {
            "RELAY_ALLOW_UNAUTHENTICATED": "yes",
            "RELAY_READ_TIMEOUT": "2500ms",
            "RELAY_MAX_EVENT_AGE": "10m",
        }
    )
    assert settings.allow_unauthenticated is True
    assert settings.read_timeout == 2.5
    assert settings.max_event_age == 600


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RELAY_ALLOW_UNAUTHENTICATED", "maybe", "not one of 1, 0"),
        ("RELAY_READ_TIMEOUT", "soon", "bad duration"),
        ("RELAY_READ_TIMEOUT", "100ms", "below the minimum 0.5s"),
        ("RELAY_MAX_EVENT_AGE", "a week", "bad duration"),
    ],
)
def test_bad_security_settings_name_the_variable(variable, value, message):
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert message in caught.value.message


@pytest.mark.parametrize("variable", ["RELAY_ADMIN_TOKEN", "RELAY_VIEWER_TOKEN"])
def test_a_token_shorter_than_16_characters_is_refused_naming_it(variable):
    tokens = {"RELAY_ADMIN_TOKEN": "a" * 16, "RELAY_VIEWER_TOKEN": "v" * 16}
    assert load_settings(tokens).viewer_token == "v" * 16  # 16 is enough
    short = "s3cr3t-15-chars"
    with pytest.raises(SettingsError) as caught:
        load_settings({**tokens, variable: short})
    assert caught.value.variable == variable
    assert caught.value.message.startswith("shorter than 16 characters")
    assert short not in str(caught.value)


def test_the_web_process_refuses_a_short_admin_token_with_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "web"],
        env={
            "PATH": "/usr/bin:/bin",
            "RELAY_ADMIN_TOKEN": "admin",
            "RELAY_DATA_DIR": str(tmp_path),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "relay: RELAY_ADMIN_TOKEN: shorter than 16 characters (value not shown): use a random one"
    ]
