"""A TCP forwarder for the tests: the stable address of an endpoint whose server changes,
as a managed Redis endpoint behaves when its provider fails it over.

::

    with TcpForwarder(primary.address) as endpoint:      # listens on 127.0.0.1, a free port
        client = redis.Redis(*endpoint.address)           # reaches the primary
        endpoint.move(replica.address)                    # new connections reach the replica;
        topology.promote_replica_manually(replica)        # `client` stays on the old primary
                                                          # and gets READONLY for writes
        endpoint.drop_all()                               # every connection closed

One thread runs a selector loop over every socket: full duplex, buffered both ways, and
a connection whose peer stops reading stops being read, as a real server's would.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
from collections.abc import Callable

HOST = "127.0.0.1"
DEFAULT_CONNECT_TIMEOUT = 2.0  #: seconds to reach the target for a new connection
_CHUNK = 65536  #: bytes read at a time
_BUFFERED = 1 << 20  #: bytes waiting for a slow reader before its peer is no longer read


class _Side:
    """One socket of a forwarded connection, and what waits to be written to it."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.pending = bytearray()
        self.events = 0  #: what the selector watches it for (0: not registered)
        self.peer: _Side


class TcpForwarder:
    """Forwards each connection accepted on :attr:`address` to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server((HOST, 0))
        self._listener.setblocking(False)
        self._port: int = self._listener.getsockname()[1]
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, self._commands)
        self._calls: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]]
        self._calls = queue.SimpleQueue()
        self._sides: set[_Side] = set()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="tcp-forwarder", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def target(self) -> tuple[str, int]:
        return self._target

    def move(self, target: tuple[str, int]) -> None:
        """New connections go to ``target``; those open stay where they are."""
        self._target = target

    def connection_count(self) -> int:
        """How many forwarded connections are open."""
        counted: list[int] = []
        self._call(lambda: counted.append(len(self._sides) // 2))
        return counted[0]

    def drop_all(self) -> None:
        """Close every current connection (both sides); returns once they are closed."""
        self._call(self._close_all)

    def close(self) -> None:
        """Close every connection and stop listening; no thread is left."""
        if self._thread.is_alive():
            self._call(self._shut_down)
            self._thread.join()
        for sock in (self._listener, self._wake_reader, self._wake_writer):
            sock.close()
        self._selector.close()

    def __enter__(self) -> TcpForwarder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the loop's thread ----------------------------------------------------------------

    def _call(self, function: Callable[[], None]) -> None:
        """Run ``function`` in the loop's thread and wait for it."""
        if not self._thread.is_alive():
            raise RuntimeError("the forwarder is closed")
        done = threading.Event()
        self._calls.put((function, done))
        self._wake_writer.send(b"\0")
        while not done.wait(0.1):
            if not self._thread.is_alive():
                raise RuntimeError("the forwarder is closed")

    def _loop(self) -> None:
        while self._running:
            for key, mask in self._selector.select():
                key.data(key.fileobj, mask)
        self._close_all()  # any accepted in the same round as the shutdown

    def _commands(self, wake: socket.socket, _mask: int) -> None:
        wake.recv(_CHUNK)
        while not self._calls.empty():
            function, done = self._calls.get()
            try:
                function()
            finally:
                done.set()

    def _close_all(self) -> None:
        for side in list(self._sides):
            self._close(side)

    def _shut_down(self) -> None:
        self._close_all()
        self._running = False

    def _accept(self, listener: socket.socket, _mask: int) -> None:
        if not self._running:
            return
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self._target, DEFAULT_CONNECT_TIMEOUT)
        except OSError:
            client.close()  # as a client of a dead endpoint sees it: closed at once
            return
        one, other = _Side(client), _Side(upstream)
        one.peer, other.peer = other, one
        for side in (one, other):
            self._sides.add(side)
            self._watch(side)

    def _ready(self, side: _Side) -> Callable[[socket.socket, int], None]:
        def ready(_sock: socket.socket, mask: int) -> None:
            if mask & selectors.EVENT_WRITE and side in self._sides:
                self._flush(side)
            if mask & selectors.EVENT_READ and side in self._sides:
                self._read(side)

        return ready

    def _read(self, side: _Side) -> None:
        try:
            data = side.sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._flush(side.peer)  # what it said last, if the peer takes it at once
            self._close(side)
            return
        side.peer.pending += data
        self._flush(side.peer)

    def _flush(self, side: _Side) -> None:
        try:
            sent = side.sock.send(side.pending) if side.pending else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(side)
            return
        del side.pending[:sent]
        self._watch(side)
        self._watch(side.peer)

    def _watch(self, side: _Side) -> None:
        """Write when there is something to write; read unless the peer is backed up."""
        events = selectors.EVENT_WRITE if side.pending else 0
        if len(side.peer.pending) < _BUFFERED:
            events |= selectors.EVENT_READ
        if side not in self._sides or events == side.events:
            return
        if not side.events:
            self._selector.register(side.sock, events, self._ready(side))
        elif events:
            self._selector.modify(side.sock, events, self._ready(side))
        else:
            self._selector.unregister(side.sock)
        side.events = events

    def _close(self, side: _Side) -> None:
        """Close a connection: this side and its peer."""
        for each in (side, side.peer):
            if each in self._sides:
                self._sides.discard(each)
                if each.events:
                    self._selector.unregister(each.sock)
                with contextlib.suppress(OSError):
                    each.sock.shutdown(socket.SHUT_RDWR)
                each.sock.close()
