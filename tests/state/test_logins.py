"""The login throttle against the suite's real Redis: failures counted per address in a
window, a cooling-off at the limit that ends when it said, and no longer."""

from __future__ import annotations

import pytest

from relay.state import connect, keys
from relay.state.logins import LoginThrottle
from tests.harness import wait_until


@pytest.fixture
def client(redis_server):
    client = connect(redis_server.url)
    yield client
    client.close()
    client.connection_pool.disconnect()  # close() leaves a pool it was given


def test_the_limit_th_failure_starts_a_cooling_off_for_that_address_only(client):
    throttle = LoginThrottle(client, limit=3, window=60, cooldown=30)
    assert [throttle.failed("10.0.0.1") for _ in range(2)] == [1, 2]
    assert throttle.cooling_off("10.0.0.1") == 0
    assert throttle.failed("10.0.0.1") == 3
    assert 29 < throttle.cooling_off("10.0.0.1") <= 30
    assert throttle.cooling_off("10.0.0.2") == 0
    assert throttle.cooling_off("::1") == 0


def test_the_cooling_off_ends_on_time_and_counting_starts_again(client):
    throttle = LoginThrottle(client, limit=2, window=60, cooldown=0.3)
    throttle.failed("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.cooling_off("10.0.0.1") > 0
    wait_until(lambda: throttle.cooling_off("10.0.0.1") == 0, 5)
    assert throttle.failed("10.0.0.1") == 1


def test_failures_count_within_a_window_from_the_first(client):
    throttle = LoginThrottle(client, limit=3, window=0.3, cooldown=60)
    throttle.failed("10.0.0.1")
    throttle.failed("10.0.0.1")
    wait_until(lambda: not client.exists(keys.logins("10.0.0.1")), 5)
    assert throttle.failed("10.0.0.1") == 1  # the two before were in another window
    assert throttle.cooling_off("10.0.0.1") == 0
