"""``relay worker --check``: the liveness probe of a worker host. Exit 0 only while a worker
of this host beats into Redis; a hung (stopped) worker, a stopped one, none at all, or Redis
not answering is exit 1 with one line saying which."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from relay.ops.liveness import worker_liveness
from relay.state import Store, connect
from relay.state.pending import NODE_TTL
from tests.harness import WorkerProcess, fresh_db_url, relay_command, relay_env, wait_until


def store(url: str, node: str | None = None) -> Store:
    return Store(connect(url), 3600, 3600, grace=60, node=node)


def test_the_freshest_beat_of_this_host_decides(redis_server):
    url = fresh_db_url(redis_server)
    now = time.time()
    assert not worker_liveness(store(url), "h1", now).alive
    store(url, "h1:10:aaaaaa").pending.heartbeat(now=now - NODE_TTL - 5)  # a dead one
    store(url, "h2:11:bbbbbb").pending.heartbeat(now=now)  # another host's
    stale = worker_liveness(store(url), "h1", now)
    assert not stale.alive
    assert stale.message == "worker h1:10:aaaaaa last beat 20 s ago (alive means within 15 s)"
    store(url, "h1:12:cccccc").pending.heartbeat(now=now - 2)  # its replacement
    fresh = worker_liveness(store(url), "h1", now)
    assert fresh.alive
    assert fresh.message == "worker h1:12:cccccc alive: last beat 2.0 s ago"
    store(url, "h1:12:cccccc").pending.leave()
    assert worker_liveness(store(url), "h1", now).message == (
        "worker h1:10:aaaaaa last beat 20 s ago (alive means within 15 s)"
    )
    store(url, "h1:10:aaaaaa").pending.leave()
    assert worker_liveness(store(url), "h1", now).message.endswith(
        "stopped (no worker of host h1 beats)"
    )
    assert not worker_liveness(store(url), "h1:1", now).alive  # a host, not a node prefix


@pytest.mark.e2e
def test_the_probe_follows_a_real_worker(redis_server, tmp_path):
    env = relay_env(fresh_db_url(redis_server))
    host = socket.gethostname()

    def check():
        return relay_command(env, "worker", "--check")

    none = check()
    assert (none.returncode, none.stderr) == (
        1,
        f"no worker of host {host} has a heartbeat in Redis\n",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: check().returncode == 0, 15)
        assert f"worker {host}:" in check().stdout
        worker.process.send_signal(signal.SIGSTOP)  # hung: its heartbeat thread too
        try:
            started = time.monotonic()
            wait_until(lambda: check().returncode == 1, NODE_TTL + 15)
            assert time.monotonic() - started > NODE_TTL - 5  # not before its beats went stale
            assert "s ago (alive means within 15 s)" in check().stderr
        finally:
            worker.process.send_signal(signal.SIGCONT)
        wait_until(lambda: check().returncode == 0, 15)
    finally:
        worker.stop()
    stopped = check()
    assert stopped.returncode == 1
    assert "stopped (no worker of host" in stopped.stderr


def test_redis_not_answering_is_not_alive(tmp_path):
    answer = relay_command(relay_env("redis://127.0.0.1:1/0"), "worker", "--check")
    assert answer.returncode == 1
    assert answer.stderr.startswith("relay: worker not known to be alive: redis: ")
    assert answer.stderr.count("\n") == 1
