"""The Redis settings of a highly available relay: Sentinel URLs and replication."""

from __future__ import annotations

import pytest

from relay.errors import SettingsError
from relay.settings import load_settings
from tests.harness import relay_command

SENTINELS = "redis+sentinel://:data-pw@10.0.0.1:26379,10.0.0.2:26379/relay"


def test_sentinel_urls_are_accepted_and_wait_for_one_replica_by_default():
    settings = load_settings({"RELAY_REDIS_URL": SENTINELS})
    assert settings.redis_url == SENTINELS
    assert settings.redis_min_replicas == 1
    assert settings.redis_replica_timeout == 0.5
    assert "data-pw" not in repr(settings)


def test_one_server_waits_for_no_replica_unless_asked():
    assert load_settings({"RELAY_REDIS_URL": "redis://h:6379/0"}).redis_min_replicas == 0
    settings = load_settings(
        {
            "RELAY_REDIS_URL": "rediss://h:6380/0",
            "RELAY_REDIS_MIN_REPLICAS": "2",
            "RELAY_REDIS_REPLICA_TIMEOUT": "200ms",
        }
    )
    assert (settings.redis_min_replicas, settings.redis_replica_timeout) == (2, 0.2)


def test_sentinels_may_have_a_password_of_their_own():
    settings = load_settings(
        {"RELAY_REDIS_URL": SENTINELS, "RELAY_REDIS_SENTINEL_PASSWORD": "sentinel-pw"}
    )
    assert settings.redis_sentinel_password == "sentinel-pw"
    assert "sentinel-pw" not in repr(settings)


def test_quorum_queues_are_off_unless_asked():
    assert load_settings({}).amqp_quorum is False
    assert load_settings({"RELAY_AMQP_QUORUM": "1"}).amqp_quorum is True


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({"RELAY_REDIS_URL": "redis+sentinel://h1:26379"}, "RELAY_REDIS_URL", "names no service"),
        (
            {"RELAY_REDIS_URL": "redis+sentinel://:hunter2@h1:x/relay"},
            "RELAY_REDIS_URL",
            "invalid port",
        ),
        ({"RELAY_REDIS_URL": "sentinel://h1/relay"}, "RELAY_REDIS_URL", "scheme 'sentinel'"),
        (
            {"RELAY_REDIS_URL": SENTINELS, "RELAY_REDIS_MIN_REPLICAS": "-1"},
            "RELAY_REDIS_MIN_REPLICAS",
            "below the minimum 0",
        ),
        (
            {"RELAY_REDIS_URL": SENTINELS, "RELAY_REDIS_REPLICA_TIMEOUT": "2s"},
            "RELAY_REDIS_REPLICA_TIMEOUT",
            "must be below RELAY_ENQUEUE_TIMEOUT (1.5s)",
        ),
        (
            {"RELAY_REDIS_URL": "redis://h/0", "RELAY_REDIS_SENTINEL_PASSWORD": "x"},
            "RELAY_REDIS_SENTINEL_PASSWORD",
            "names no Sentinels",
        ),
    ],
)
def test_a_bad_redis_setting_is_one_line_naming_it(env, variable, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.variable == variable
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("command", [["up"], ["web"], ["worker"], ["dlq", "list"]])
def test_commands_refuse_a_bad_sentinel_url_with_one_line_and_exit_2(command, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "RELAY_REDIS_URL": "redis+sentinel://:hunter2@127.0.0.1:1/",
        "RELAY_DATA_DIR": str(tmp_path),
    }
    done = relay_command(env, *command)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "relay: RELAY_REDIS_URL: names no service: add /SERVICE after the Sentinels "
        "(e.g. /mymaster)"
    ]
