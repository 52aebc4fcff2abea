"""The embedded Redis of ``relay up``: private (a password kept 0600 in a 0700 data dir, no
file others can read) and the best redis-server at hand (>= 7 on PATH, else the bundled one)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
import redis

from relay.cli import embedded
from relay.cli.embedded import (
    PASSWORD_FILE,
    URL_FILE,
    EmbeddedRedis,
    find_redis_server,
    running_embedded_url,
)
from relay.errors import ConfigError
from tests.harness import wait_until
from tests.skips import skip_or_fail


@pytest.fixture
def no_redis_on_path(monkeypatch, tmp_path):
    """A PATH with no redis-server: a fresh machine with only Python."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def fake_redis_server(directory: Path, version: str) -> Path:
    directory.mkdir(exist_ok=True)
    script = directory / "redis-server"
    script.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 bits=64'\n")
    script.chmod(0o755)
    return script


def rewritten(client: redis.Redis) -> bool:
    info = client.info("persistence")
    return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]


def unauthenticated_ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(100)


def modes(data_dir: Path) -> dict[str, int]:
    return {
        str(path.relative_to(data_dir)): stat.S_IMODE(path.stat().st_mode)
        for path in [data_dir, *data_dir.rglob("*")]
    }


@pytest.fixture(params=["on PATH", "bundled"])
def which_server(request, monkeypatch, tmp_path):
    """Each test twice: with the machine's redis-server (when it has one >= 7) and with the
    bundled one alone."""
    if request.param == "bundled":
        request.getfixturevalue("no_redis_on_path")
    elif find_redis_server().bundled:
        skip_or_fail("redis-server >= 7", "none on this machine's PATH (Debian 12: redis-server)")
    return request.param


def test_a_password_is_made_at_the_first_start_kept_0600_and_reused(tmp_path, which_server):
    data_dir = tmp_path / "var"
    server = EmbeddedRedis(data_dir).start()
    try:
        password = (data_dir / PASSWORD_FILE).read_text().strip()
        assert len(password) >= 32
        assert server.url == f"redis://:{password}@127.0.0.1:{server.port}/0"
        assert unauthenticated_ping(server.port).startswith(b"-NOAUTH")
        with redis.Redis.from_url(server.url) as client:
            client.set("relay:test", "kept")
    finally:
        server.stop()
    again = EmbeddedRedis(data_dir).start()
    try:
        assert (data_dir / PASSWORD_FILE).read_text().strip() == password
        with redis.Redis.from_url(again.url) as client:
            assert client.get("relay:test") == b"kept"
    finally:
        again.stop()


def test_the_data_dir_is_0700_and_nothing_in_it_is_readable_by_others(tmp_path, which_server):
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # as an older relay left it, with its append-only file 0644
    (data_dir / "appendonly.aof").write_text("")
    (data_dir / "appendonly.aof").chmod(0o644)
    server = EmbeddedRedis(data_dir).start()
    try:
        with redis.Redis.from_url(server.url) as client:
            client.set("relay:event:1", "+447700900123")
            client.bgrewriteaof()  # the files a rewrite makes too
            wait_until(lambda: rewritten(client), 10)
        found = modes(data_dir)
        assert found["."] == 0o700
        assert PASSWORD_FILE in found and URL_FILE in found and "redis.conf" in found
        assert "redis.log" in found and ("appendonlydir" in found or "appendonly.aof" in found)
        assert {name: mode for name, mode in found.items() if mode & 0o077} == {}
    finally:
        server.stop()


def test_clients_find_the_url_with_its_password_while_it_runs(tmp_path, which_server):
    data_dir = tmp_path / "var"
    server = EmbeddedRedis(data_dir, appendonly=False).start()
    try:
        assert running_embedded_url(data_dir) == server.url
        assert stat.S_IMODE((data_dir / URL_FILE).stat().st_mode) == 0o600
    finally:
        server.stop()
    assert running_embedded_url(data_dir) is None


def test_the_summary_names_version_and_binary_but_not_the_password(tmp_path, which_server):
    server = EmbeddedRedis(tmp_path / "var", appendonly=False).start()
    try:
        chosen = find_redis_server()
        assert server.summary.startswith(
            f"embedded Redis {chosen.version_text} ({chosen.executable}"
        )
        assert f"127.0.0.1:{server.port}" in server.summary
        assert server.url.split("@")[0].split(":")[-1] not in server.summary
        if which_server == "bundled":
            assert chosen.bundled and chosen.version < (7, 0, 0)
            assert "bundled" in server.summary
        else:
            assert not chosen.bundled and chosen.version >= (7, 0, 0)
    finally:
        server.stop()


def test_a_redis_server_7_on_path_is_preferred(monkeypatch, tmp_path):
    newer = fake_redis_server(tmp_path / "new", "7.2.4")
    monkeypatch.setenv("PATH", str(newer.parent))
    assert find_redis_server() == embedded.RedisServer(str(newer), (7, 2, 4), bundled=False)


@pytest.mark.parametrize("version", ["6.0.16", "not a version"])
def test_an_older_or_broken_redis_server_on_path_gives_way_to_the_bundled_one(
    monkeypatch, tmp_path, version
):
    older = fake_redis_server(tmp_path / "old", version)
    monkeypatch.setenv("PATH", str(older.parent))
    chosen = find_redis_server()
    assert chosen.bundled and chosen.executable == embedded.bundled_executable()
    assert chosen.version[:2] == (6, 2)


def test_the_bundled_6_2_refuses_a_data_dir_redis_7_wrote(tmp_path, no_redis_on_path):
    data_dir = tmp_path / "var"
    (data_dir / "appendonlydir").mkdir(parents=True)
    server = EmbeddedRedis(data_dir)
    with pytest.raises(ConfigError, match=r"holds the data of Redis 7 or later.*redis-server >= 7"):
        server.start()
    server.stop()
