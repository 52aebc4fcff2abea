"""Sentinel URLs: every form RELAY_REDIS_URL may take, and every mistake named."""

from __future__ import annotations

import pytest

from relay.ops.broker import celery_config, kombu_sentinel_url
from relay.redis_url import SentinelURL, is_sentinel, parse_sentinel_url
from relay.settings import load_settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster",
            SentinelURL((("10.0.0.1", 26379), ("10.0.0.2", 26380)), "mymaster"),
        ),
        (
            "redis+sentinel://:s%40cret@h1:1,h2:2,h3:3/relay/4",
            SentinelURL((("h1", 1), ("h2", 2), ("h3", 3)), "relay", 4, None, "s@cret"),
        ),
        (
            "redis+sentinel://user:pw@h1/svc",
            SentinelURL((("h1", 26379),), "svc", 0, "user", "pw"),
        ),
        (
            "rediss+sentinel://[::1]:26379,[fe80::1]/svc.a-b_c/",
            SentinelURL((("::1", 26379), ("fe80::1", 26379)), "svc.a-b_c", tls=True),
        ),
    ],
)
def test_sentinel_urls_are_read(url, expected):
    assert is_sentinel(url)
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h1:26379", "names no service"),
        ("redis+sentinel://h1:26379/", "names no service"),
        ("redis+sentinel:///svc", "names no Sentinel host"),
        ("redis+sentinel://h1:26379,,h2/svc", "names no Sentinel host"),
        ("redis+sentinel://h1:notaport/svc", "invalid port"),
        ("redis+sentinel://h1:70000/svc", "invalid port"),
        ("redis+sentinel://h1/svc/one", "database 'one' is not a number"),
        ("redis+sentinel://h1/svc/0/extra", "path must be /SERVICE or /SERVICE/DB"),
        ("redis+sentinel://h1/bad name", "path must be"),
        ("redis+sentinel://h1/svc?ssl=1", "no query"),
        ("redis+sentinel://hunter2@h1/svc", ":PASSWORD@"),
        ("redis+sentinel://[::1]x/svc", "[ADDRESS]:PORT"),
        ("redis+sentinel://bad_host!/svc", "not a host name"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong(url, says):
    with pytest.raises(ValueError) as caught:
        parse_sentinel_url(url)
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_password_stays_out_of_the_printable_form():
    address = parse_sentinel_url("redis+sentinel://:hunter2@h1:1,h2:2/svc/3")
    assert address.without_secrets() == "redis+sentinel://h1:1,h2:2/svc/3"
    assert "hunter2" not in repr(address)


def test_the_broker_goes_through_the_same_sentinels():
    settings = load_settings(
        {
            "RELAY_REDIS_URL": "redis+sentinel://:pw@h1:1,h2:2/relay/3",
            "RELAY_REDIS_SENTINEL_PASSWORD": "sentinel-pw",
        }
    )
    config = celery_config(settings)
    assert config["broker_url"] == "sentinel://:pw@h1:1/3;sentinel://:pw@h2:2/3"
    assert config["broker_transport"] == "relay.worker.transport:SentinelTransport"
    options = config["broker_transport_options"]
    assert options["master_name"] == "relay"
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"


def test_a_separate_broker_is_left_alone():
    settings = load_settings(
        {
            "RELAY_REDIS_URL": "redis+sentinel://h1:1/relay",
            "RELAY_BROKER_URL": "amqp://guest:guest@rabbit//",
        }
    )
    config = celery_config(settings)
    assert config["broker_url"] == "amqp://guest:guest@rabbit//"
    assert "master_name" not in config["broker_transport_options"]


def test_kombu_url_brackets_ipv6_sentinels():
    address = parse_sentinel_url("redis+sentinel://[::1]:5/svc")
    assert kombu_sentinel_url(address) == "sentinel://[::1]:5/0"
