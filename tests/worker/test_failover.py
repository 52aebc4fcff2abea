"""Redis Sentinel failovers under load: the Procfile's web and two workers, a sender that
retries 503s as Webex Connect does, the primary SIGKILLed twice. Nothing accepted is lost,
refusals are a short window, workers follow the new primary (their Celery consumers too)
and no live worker is taken for dead."""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import load_fixture
from tests.harness import WorkerProcess, relay_env, wait_until, web_process
from tests.httpsink import Answer, HttpSink

pytestmark = pytest.mark.faults

WEBHOOK = "/webhooks/webex-connect"
MAX_REFUSAL = 10.0  #: seconds of 503s a failover may cost at most
IN_FLIGHT = 1.0  #: seconds before a kill within which a delivery counts as in flight


def rules(tmp_path: Path, sink: HttpSink) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"""version: 1
destinations:
  app:
    type: http
    url: "{sink.url("/in")}"
    retry: {{attempts: 100, initial: 200ms, max: 1s}}
routes:
  - name: inbound
    match: {{kind: inbound_message}}
    to: [app]
"""
    )
    return path


@dataclass
class Sender:
    """Posts inbound messages (unique texts) from a few threads; retries a 503 after a
    short pause, as Webex Connect retries its callbacks."""

    base: str
    answers: list[tuple[float, int]] = field(default_factory=list)  #: (answered at, status)
    accepted: dict[str, str] = field(default_factory=dict)  #: text → event id
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, threads: int = 3) -> list[threading.Thread]:
        workers = [threading.Thread(target=self._send, args=(n,)) for n in range(threads)]
        for thread in workers:
            thread.start()
        return workers

    def _send(self, n: int) -> None:
        session = requests.Session()
        fixture = load_fixture("inbound-sms.json")
        i = 0
        while not self.stop.is_set():
            i += 1
            text = f"m{n}-{i}"
            while not self.stop.is_set():
                answer = session.post(
                    self.base + WEBHOOK, json={**fixture, "message": text}, timeout=10
                )
                self.answers.append((time.monotonic(), answer.status_code))
                if answer.status_code == 200:
                    for event_id in answer.json()["accepted"]:
                        self.accepted[text] = event_id
                    break
                time.sleep(0.3)
            time.sleep(0.02)


def delivered_texts(sink: HttpSink) -> collections.Counter[str]:
    return collections.Counter(
        json.loads(request.body)["text"] for request, status in sink.answered() if status == 200
    )


def refusal_windows(answers: list[tuple[float, int]], kills: list[float]) -> list[float]:
    """Per kill: seconds from the kill to the last 503 answered before the next kill."""
    windows = []
    for i, killed in enumerate(kills):
        end = kills[i + 1] if i + 1 < len(kills) else float("inf")
        refused = [at for at, status in answers if status == 503 and killed <= at < end]
        windows.append(max(refused) - killed if refused else 0.0)
    return windows


def test_two_primary_kills_under_load_lose_nothing(sentinel_topology, tmp_path, fault_report):
    sink = HttpSink()
    fails = iter(range(10**9))
    # every 10th request fails: some deliveries travel as relay.deliver retries through
    # the broker, which fails over too
    sink.on_request = lambda request: next(fails) % 10 == 9 and sink.script(Answer(503))
    with sink:
        env = relay_env(sentinel_topology.url(), RELAY_RULES=str(rules(tmp_path, sink)))
        workers = [WorkerProcess(env, tmp_path / f"worker{i}.log").start() for i in range(2)]
        try:
            with web_process(sentinel_topology.url(), tmp_path / "web.log", **env) as port:
                sender = Sender(f"http://127.0.0.1:{port}")
                threads = sender.run()
                kills, failovers = [], []
                try:
                    for _ in range(2):
                        time.sleep(3)
                        kills.append(time.monotonic())  # before: its first 503s are its own
                        old = sentinel_topology.kill_primary()
                        _, seconds = sentinel_topology.wait_for_failover(old)
                        failovers.append(seconds)
                        sentinel_topology.heal(old)
                    time.sleep(2)
                finally:
                    sender.stop.set()
                    for thread in threads:
                        thread.join()
                texts = set(sender.accepted)
                try:
                    wait_until(lambda: texts <= set(delivered_texts(sink)), 60)
                except AssertionError:
                    missing = texts - set(delivered_texts(sink))
                    ids = sorted(sender.accepted[text] for text in missing)
                    message = f"{len(missing)} accepted, not delivered: {ids}"
                    raise AssertionError(message) from None
        finally:
            # up to here every worker lived: a take-over after is of one stopped (it left)
            running_logs = [worker.log_path.stat().st_size for worker in workers]
            for worker in workers:
                worker.stop()
    statuses = collections.Counter(status for _, status in sender.answers)
    windows = refusal_windows(sender.answers, kills)
    counts = delivered_texts(sink)
    repeated = {text: n for text, n in counts.items() if n > 1}
    first_seen = {}
    for request, status in sink.answered():
        if status == 200:
            first_seen.setdefault(json.loads(request.body)["text"], request.at)
    in_flight = {
        text
        for text, at in first_seen.items()
        if any(
            killed - IN_FLIGHT <= at <= killed + window + IN_FLIGHT
            for killed, window in zip(kills, windows, strict=True)
        )
    }
    fault_report.append(
        f"Sentinel failover x2 under load | accepted {len(texts)} | delivered "
        f"{len(texts & set(counts))} | repeated {len(repeated)} | failovers "
        f"{', '.join(f'{s:.1f}s' for s in failovers)} | 503 windows "
        f"{', '.join(f'{w:.1f}s' for w in windows)} | answers {dict(statuses)}"
    )
    assert set(statuses) <= {200, 503}
    assert statuses[503] > 0  # the kills were felt
    assert texts <= set(counts)
    assert all(window <= MAX_REFUSAL for window in windows), windows
    assert set(repeated) <= in_flight, (repeated, kills)
    for worker, running in zip(workers, running_logs, strict=True):
        log = worker.log_path.read_text()
        # no live worker was taken for dead while all of them ran
        assert "took over" not in log.encode()[:running].decode(errors="replace")
        assert "Traceback" not in log
    assert "Traceback" not in (tmp_path / "web.log").read_text()


def test_a_worker_consumes_retries_after_the_broker_fails_over(sentinel_topology, tmp_path):
    """Every first attempt fails, so every delivery is a relay.deliver task: after two
    failovers, one worker's Celery consumer must still be taking them."""
    sink = HttpSink()
    sink.fail_first_attempts()
    with sink:
        env = relay_env(sentinel_topology.url(), RELAY_RULES=str(rules(tmp_path, sink)))
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            with web_process(sentinel_topology.url(), tmp_path / "web.log", **env) as port:
                base = f"http://127.0.0.1:{port}"
                for _ in range(2):
                    old = sentinel_topology.kill_primary()
                    sentinel_topology.wait_for_failover(old)
                    sentinel_topology.heal(old)
                texts = [f"after failover {i}" for i in range(10)]
                fixture = load_fixture("inbound-sms.json")
                for text in texts:
                    wait_until(
                        lambda text=text: (
                            requests.post(
                                base + WEBHOOK, json={**fixture, "message": text}, timeout=10
                            ).status_code
                            == 200
                        ),
                        20,
                    )
                wait_until(lambda: set(texts) <= set(delivered_texts(sink)), 30)
        finally:
            worker.stop()
    assert worker.process.returncode == 0
    assert "Task relay.deliver" in worker.log_path.read_text()
