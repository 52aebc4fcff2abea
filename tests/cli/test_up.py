"""``relay up``: the embedded default, as a user runs it (real processes, real signals)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import requests

from relay.cli.embedded import free_port
from tests.conftest import load_fixture
from tests.harness import ROOT, wait_until

pytestmark = pytest.mark.e2e


def user_env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    env["RELAY_DATA_DIR"] = str(data_dir)
    return env


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


class Up:
    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.data_dir = data_dir
        self.marker = f"RELAY_DATA_DIR={data_dir}"
        self._out = open(log, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "up", "--port", str(self.port)],
            env=user_env(data_dir),
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: "is up" in self.output() or self.process.poll() is not None, 60)
        assert self.process.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str = "/webhooks/webex-connect") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def redis(self) -> redis.Redis:
        """A client of the embedded Redis: the URL, with its password, is in the data dir."""
        url = (self.data_dir / "redis.url").read_text().strip()
        port = re.search(r"embedded Redis [\d.]+ \(/.*\) on 127\.0\.0\.1:(\d+)", self.output())
        assert port and url.endswith(f"@127.0.0.1:{port.group(1)}/0"), self.output()
        password = (self.data_dir / "redis.password").read_text().strip()
        assert password in url and password not in self.output()
        return redis.Redis.from_url(url, decode_responses=True)

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(60)
        self._out.close()
        return code


def test_up_serves_persists_and_stops_cleanly(tmp_path):
    data_dir = tmp_path / "var"
    first = Up(data_dir, tmp_path / "first.log")
    assert first.url() in first.output()
    assert "curl -sS -X POST " + first.url() in first.output()
    answer = requests.post(first.url(), json=load_fixture("receipt-delivered.json"), timeout=5)
    assert answer.status_code == 200
    (event_id,) = answer.json()["accepted"]
    store = first.redis()
    wait_until(lambda: store.exists(f"relay:event:{event_id}"))
    store.close()
    shown = subprocess.run(  # finds the embedded Redis through RELAY_DATA_DIR
        [sys.executable, "-m", "relay.cli", "events", "show", event_id],
        env=user_env(data_dir),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert event_id in shown.stdout
    assert first.stop(signal.SIGTERM) == 0
    wait_until(lambda: not processes_with(first.marker), 10)

    second = Up(data_dir, tmp_path / "second.log")
    store = second.redis()
    assert store.exists(f"relay:event:{event_id}")
    assert requests.post(
        second.url(), json=load_fixture("receipt-delivered.json"), timeout=5
    ).json() == {"accepted": [], "duplicates": 1}
    store.close()
    assert second.stop(signal.SIGINT) == 0
    wait_until(lambda: not processes_with(second.marker), 10)


def test_killed_up_leaves_no_process_behind(tmp_path):
    up = Up(tmp_path / "var", tmp_path / "up.log")
    assert len(processes_with(up.marker)) >= 4  # up, redis, gunicorn (2+), celery
    up.stop(signal.SIGKILL)
    wait_until(lambda: not processes_with(up.marker), 20)


def test_second_up_on_the_same_data_dir_is_refused(tmp_path):
    up = Up(tmp_path / "var", tmp_path / "up.log")
    try:
        other = subprocess.run(
            [sys.executable, "-m", "relay.cli", "up", "--port", str(free_port())],
            env=user_env(tmp_path / "var"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert other.returncode == 2
        in_use = f"relay: RELAY_DATA_DIR: {(tmp_path / 'var').resolve()} is in use by another relay"
        assert other.stderr.splitlines() == [in_use]  # first and alone: no warning before it
    finally:
        up.stop(signal.SIGTERM)


def test_up_with_redis_url_starts_no_redis(tmp_path, redis_server):
    env = user_env(tmp_path / "var")
    env["RELAY_REDIS_URL"] = redis_server.url
    port = free_port()
    out = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "up", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: b"is up" in (tmp_path / "up.log").read_bytes(), 60)
        assert b"embedded Redis" not in (tmp_path / "up.log").read_bytes()
        assert not (tmp_path / "var").exists()
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        out.close()


def test_web_metrics_add_up_across_gunicorn_workers(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    up = Up(tmp_path / "var", tmp_path / "up.log")
    try:
        for number in range(12):
            payload = {**load_fixture("inbound-sms.json"), "message": f"metrics {number}"}
            assert requests.post(up.url(), json=payload, timeout=5).status_code == 200
        for _ in range(6):  # whichever of the two workers answers the scrape
            text = requests.get(up.url("/metrics"), timeout=5).text
            received = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "relay_notifications_received_total"
            )
            assert received == 12
    finally:
        up.stop(signal.SIGTERM)
