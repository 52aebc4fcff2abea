"""How the real web process listens (gunicorn, relay/web/gunicorn_conf.py): one socket per
worker process, the kernel spreading connections over them; and a port already in use is
refused, as it is without per-process sockets. The bench's other web apps listen the same
way, from the same hooks (bench/listening.py), without relay's per-process parts.

The sockets are read from /proc (Linux: SO_REUSEPORT, as the configuration uses it). A
read of /proc/net/tcp may miss rows while other sockets come and go, so each look is
repeated until it is complete.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from bench import baselines, naive
from relay.cli import web_argv
from relay.cli.embedded import free_port
from tests.harness import ROOT, relay_env, wait_until, web_process

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from /proc"),
]

WORKERS = 2
#: the kernel hashes each connection to one of the WORKERS sockets, about evenly: with 64,
#: fewer than FEWEST on one side happens once in ten million runs (twice the binomial tail
#: P(X <= 11), X ~ B(64, 1/2), is 1.0e-7); a shared socket gives a burst to whoever wakes
CONNECTIONS = 64
FEWEST = 12
LISTEN = "0A"  #: the LISTEN state in /proc/net/tcp


def tcp_table() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every IPv4 TCP socket."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        rows.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state, inode))
    return rows


def socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def listeners(port: int) -> list[tuple[int, int, str, int]]:
    return [row for row in tcp_table() if row[0] == port and row[2] == LISTEN]


def worker_pids(port: int) -> list[int] | None:
    """The processes that hold a listening socket on ``port``, once there are WORKERS."""
    listening = {inode for _, _, _, inode in listeners(port)}
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if socket_inodes(int(entry.name)) & listening:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids if len(pids) == WORKERS else None


def test_each_worker_listens_on_its_own_socket_and_connections_spread(redis_server, tmp_path):
    with web_process(redis_server.url, tmp_path / "web.log", WEB_CONCURRENCY=str(WORKERS)) as port:
        pids = wait_until(lambda: worker_pids(port))  # the web answers once the first listens
        assert len(listeners(port)) <= WORKERS  # one each, none shared
        address = ("127.0.0.1", port)
        clients = [socket.create_connection(address, timeout=5) for _ in range(CONNECTIONS)]
        try:
            for client in clients:  # each one answered: accepted by a worker
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert client.recv(65536).startswith(b"HTTP/1.1 200")
            ours = {client.getsockname()[1] for client in clients}

            def held() -> list[int] | None:
                server_sides = {
                    inode
                    for local, remote, _, inode in tcp_table()
                    if local == port and remote in ours
                }
                counts = [len(socket_inodes(pid) & server_sides) for pid in pids]
                return counts if sum(counts) == CONNECTIONS else None

            counts = wait_until(held)
        finally:
            for client in clients:
                client.close()
        assert min(counts) >= FEWEST, counts


def test_a_port_already_in_use_is_refused_in_one_line(redis_server, tmp_path):
    with web_process(redis_server.url, tmp_path / "web.log") as port:
        second = subprocess.run(
            web_argv("127.0.0.1", port),
            env=relay_env(redis_server.url),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert_refused(second, port)


@contextlib.contextmanager
def gunicorn(argv: list[str], env: dict[str, str], log: Path) -> Iterator[int]:
    """``python -m <argv>`` (a gunicorn command) bound to a free port, once the port answers;
    yields the port, stops it after."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *argv, "--bind", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: process.poll() is not None or _answers(port), 30)
        assert process.poll() is None, log.read_text()
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _answers(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=1)
    except requests.RequestException:
        return False
    return True


def test_the_careful_naive_web_of_the_bench_listens_as_relay_does(redis_server, tmp_path):
    """The e2e bench's hand-written relay gets relay's listening: a socket per worker
    process, and a second one on its port refused (``--reuse-port`` alone would share it)."""
    argv = naive.web_argv("careful", WORKERS, 2)
    env = {**relay_env(redis_server.url), "NAIVE_REDIS_URL": redis_server.url}
    with gunicorn(argv, env, tmp_path / "naive.log") as port:
        wait_until(lambda: worker_pids(port))
        assert len(listeners(port)) == WORKERS
        second = subprocess.run(
            [sys.executable, "-m", *argv, "--bind", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert_refused(second, port)


def test_an_ingest_baseline_runs_relays_settings_without_relays_own_processes(
    redis_server, tmp_path
):
    """The LPUSH floor under bench.gunicorn_conf: relay's listening, and none of what relay's
    post_fork starts in each process (relay's app, its rules watcher): with relay's rules
    file missing it still boots and answers."""
    env = {
        **relay_env(redis_server.url),
        "RELAY_RULES": str(tmp_path / "missing.yaml"),
        "WEB_CONCURRENCY": str(WORKERS),
        "BENCH_REDIS_URL": redis_server.url,
    }
    argv = ["gunicorn", "bench.baselines:lpush", "-c", "python:bench.gunicorn_conf"]
    client = redis.Redis.from_url(redis_server.url)
    client.delete(baselines.LPUSH_KEY)
    with gunicorn(argv, env, tmp_path / "lpush.log") as port:
        wait_until(lambda: worker_pids(port))
        assert len(listeners(port)) == WORKERS
        answer = requests.post(f"http://127.0.0.1:{port}{baselines.PATH}", data=b"{}", timeout=5)
        assert answer.status_code == 200, (tmp_path / "lpush.log").read_text()
        assert answer.content == baselines.ACCEPTED
    assert client.lrange(baselines.LPUSH_KEY, 0, -1) == [b"{}"]


def assert_refused(second: subprocess.CompletedProcess[str], port: int) -> None:
    """A second web on ``port`` exited, saying the address is taken (not sharing it)."""
    assert second.returncode != 0
    refusal = f"relay: cannot listen on 127.0.0.1:{port}: address already in use"
    assert refusal in second.stdout + second.stderr
