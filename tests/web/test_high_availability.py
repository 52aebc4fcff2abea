"""The web on Redis Sentinel and on a managed endpoint that fails over: accepts are
confirmed by replicas, a failover is a window of 503s (never a 500 or a hang), and the
next calls follow the new primary. Real gunicorn web processes, real Sentinels."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
import requests

from relay.cli import web_argv, worker_argv
from relay.cli.embedded import bundled_executable, free_port
from relay.events import dead_letter, new_job
from relay.state import Store
from tests.conftest import load_fixture
from tests.forwarder import TcpForwarder
from tests.harness import ROOT, relay_command, relay_env, wait_until, web_process

WEBHOOK = "/webhooks/webex-connect"
SLOW = 2.5  #: seconds: no answer may take longer (the enqueue budget is 1.5 s)


def inbound() -> dict:
    return {**load_fixture("inbound-sms.json"), "message": f"hello {uuid.uuid4()}"}


def post(base: str, body: dict) -> tuple[requests.Response, float]:
    began = time.monotonic()
    answer = requests.post(base + WEBHOOK, json=body, timeout=10)
    return answer, time.monotonic() - began


def until_accepted(base: str, timeout: float = 20.0) -> list[int]:
    """POST fresh notifications until one is accepted; every status seen (each answer
    checked to come quickly)."""
    statuses: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer, seconds = post(base, inbound())
        assert seconds < SLOW, f"{answer.status_code} after {seconds:.1f}s"
        statuses.append(answer.status_code)
        if answer.status_code == 200:
            return statuses
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
        time.sleep(0.1)
    raise AssertionError(f"no 200 within {timeout}s: {statuses[-5:]}")


def test_the_web_follows_the_primary_through_a_failover(sentinel_topology, tmp_path):
    with web_process(sentinel_topology.url(), tmp_path / "web.log") as port:
        base = f"http://127.0.0.1:{port}"
        answer, _ = post(base, inbound())
        assert answer.status_code == 200, answer.text
        ready = requests.get(base + "/readyz", timeout=5).json()
        assert ready["checks"]["replicas"] == "ok"
        old = sentinel_topology.kill_primary()
        statuses = until_accepted(base)
        new = sentinel_topology.primary()
        assert new is not old
        assert set(statuses) <= {200, 503}
        # what was accepted is on the new primary, and so is what the next POST writes
        with new.client() as client:
            assert client.llen("relay:inbox") == 2
        assert requests.get(base + "/readyz", timeout=5).status_code == 200
    assert "Traceback" not in (tmp_path / "web.log").read_text()


def test_accepts_wait_for_a_replica_and_are_refused_without_one(sentinel_topology, tmp_path):
    with web_process(sentinel_topology.url(), tmp_path / "web.log") as port:
        base = f"http://127.0.0.1:{port}"
        assert post(base, inbound())[0].status_code == 200
        replicas = sentinel_topology.replicas()
        for replica in replicas:
            replica.pause()
        try:
            for _ in range(5):
                answer, seconds = post(base, inbound())
                assert answer.status_code == 503, answer.text
                assert seconds < 2.0
                assert answer.json() == {
                    "error": "unavailable",
                    "detail": "redis replicas not confirming writes",
                }
            # the primary notices a silent replica once its acknowledgements stop coming
            wait_until(lambda: requests.get(base + "/readyz", timeout=5).status_code == 503, 10)
            ready = requests.get(base + "/readyz", timeout=5).json()
            assert ready["checks"]["replicas"] == "redis replicas not confirming writes"
        finally:
            for replica in replicas:
                replica.resume()
        sentinel_topology.wait_synced()
        assert until_accepted(base, timeout=10)[-1] == 200


def test_a_refused_accept_retried_later_is_answered_200_once(sentinel_topology, tmp_path):
    """The 503 came after the primary took the event: the sender's retry finds it there
    and is answered 200 as a duplicate; routed once."""
    body = inbound()
    with web_process(sentinel_topology.url(), tmp_path / "web.log") as port:
        base = f"http://127.0.0.1:{port}"
        replicas = sentinel_topology.replicas()
        for replica in replicas:
            replica.pause()
        try:
            assert post(base, body)[0].status_code == 503
        finally:
            for replica in replicas:
                replica.resume()
        sentinel_topology.wait_synced()
        answer, _ = post(base, body)
        assert answer.status_code == 200
        assert answer.json() == {"accepted": [], "duplicates": 1}
        with sentinel_topology.primary().client() as client:
            assert client.llen("relay:inbox") == 1


def test_without_min_replicas_a_sentinel_relay_does_not_wait(sentinel_topology, tmp_path):
    with web_process(
        sentinel_topology.url(), tmp_path / "web.log", RELAY_REDIS_MIN_REPLICAS="0"
    ) as port:
        base = f"http://127.0.0.1:{port}"
        for replica in sentinel_topology.replicas():
            replica.pause()
        answer, _ = post(base, inbound())
        assert answer.status_code == 200
        assert "replicas" not in requests.get(base + "/readyz", timeout=5).json()["checks"]


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "relay.cli", "web"],
        web_argv("127.0.0.1", free_port()),  # the Procfile's web: gunicorn
        worker_argv(),  # the Procfile's worker: celery
        [sys.executable, "-m", "relay.cli", "dlq", "list"],
    ],
    ids=["relay web", "gunicorn", "celery", "relay dlq list"],
)
def test_an_unknown_service_is_one_line_naming_the_setting(sentinel_topology, argv):
    url = sentinel_topology.url().replace("/relay/", "/relya/")
    done = subprocess.run(
        argv,
        env=relay_env(url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("relay: ")]
    assert lines == [
        f"relay: RELAY_REDIS_URL: no Sentinel of {url} monitors a service named 'relya' "
        "(they monitor: relay)"
    ]


def test_sentinels_with_a_password_of_their_own(make_topology, tmp_path):
    topology = make_topology(password="data-secret", sentinel_password="sentinel-secret")
    with web_process(
        topology.url(), tmp_path / "web.log", RELAY_REDIS_SENTINEL_PASSWORD="sentinel-secret"
    ) as port:
        answer, _ = post(f"http://127.0.0.1:{port}", inbound())
        assert answer.status_code == 200, answer.text
    env = relay_env(topology.url(), RELAY_REDIS_SENTINEL_PASSWORD="wrong-password")
    done = relay_command(env, "dlq", "list")
    assert done.returncode == 2
    assert done.stderr.startswith("relay: RELAY_REDIS_SENTINEL_PASSWORD: refused by the Sentinel")
    assert "wrong-password" not in done.stderr


#: both redis-servers the suite may run on: the one found (>= 7 on PATH, else the bundled
#: one), and the bundled 6.2, whose scripts wrap a demoted primary's READONLY in their error
SERVERS = pytest.mark.parametrize("server", ["found", "bundled"])


def server_option(server: str) -> dict[str, str]:
    return {"executable": str(bundled_executable())} if server == "bundled" else {}


@SERVERS
def test_a_planned_sentinel_failover_is_followed(make_topology, tmp_path, server):
    """``SENTINEL FAILOVER``: the old primary stays up as a replica and the web's pooled
    connections to it stay open; each meets READONLY (on 6.2 inside the accept script's
    error), is dropped, and the next accept goes to the new primary."""
    topology = make_topology(**server_option(server))
    env = {"WEB_CONCURRENCY": "1"}
    with web_process(topology.url(), tmp_path / "web.log", **env) as port:
        base = f"http://127.0.0.1:{port}"
        for _ in range(8):  # several pooled connections to the primary
            assert post(base, inbound())[0].status_code == 200
        old = topology.switch_over()
        new, _ = topology.wait_for_failover(old)
        statuses = until_accepted(base)
        assert set(statuses) <= {200, 503}
        for _ in range(8):
            assert post(base, inbound())[0].status_code == 200
        with new.client() as client:
            assert client.llen("relay:inbox") == 8 + statuses.count(200) + 8
    assert "Traceback" not in (tmp_path / "web.log").read_text()


@SERVERS
def test_a_managed_endpoint_that_fails_over_is_followed(make_topology, tmp_path, server):
    """A plain redis:// URL whose address moves to the new primary (as ElastiCache,
    Memorystore or Azure do): the connections made before reach the demoted primary and
    meet READONLY; relay answers 503 and reconnects, to the new primary."""
    topology = make_topology(replicas=1, sentinels=0, **server_option(server))
    old, replica = topology.primary(), topology.replicas()[0]
    with TcpForwarder(old.address) as endpoint:
        url = f"redis://{endpoint.address[0]}:{endpoint.port}/0"
        with web_process(url, tmp_path / "web.log", WEB_CONCURRENCY="1") as port:
            base = f"http://127.0.0.1:{port}"
            for _ in range(8):  # several pooled connections to the old primary
                assert post(base, inbound())[0].status_code == 200
            # a managed service promotes a replica that has caught up; with the default
            # RELAY_REDIS_MIN_REPLICAS=0 relay does not wait for it (README), so neither
            # may the test promote one still syncing, as it once did just after the start
            with replica.client() as client:
                wait_until(lambda: client.llen("relay:inbox") == 8, 10)
            topology.promote_replica_manually(replica)
            endpoint.move(replica.address)
            statuses = until_accepted(base)
            assert set(statuses) <= {200, 503}
            for _ in range(8):  # the idle connections were dropped with the first READONLY
                assert post(base, inbound())[0].status_code == 200
            with replica.client() as client:
                assert client.llen("relay:inbox") == 8 + statuses.count(200) + 8
    log = (tmp_path / "web.log").read_text()
    assert "Traceback" not in log
    assert "READONLY" in log  # the 503's cause, logged


def test_operators_writes_wait_for_a_replica_too(sentinel_topology, tmp_path):
    """A pause, a resume, a re-route, a replay or a delete that replicas did not confirm is
    answered 503 (it might vanish in a failover: the operator does it again); confirmed,
    it is answered."""
    token = "an-admin-token-for-the-tests"
    headers = {"Authorization": f"Bearer {token}"}
    with web_process(
        sentinel_topology.url(), tmp_path / "web.log", RELAY_ADMIN_TOKEN=token
    ) as port:
        base = f"http://127.0.0.1:{port}"
        event_id = post(base, inbound())[0].json()["accepted"][0]
        with sentinel_topology.primary().client() as client:  # stored, as a worker would
            spec = json.loads(client.hget("relay:pending:tasks", f"route:{event_id}"))
            client.set(f"relay:event:{event_id}", json.dumps(spec["args"][0]))
        dead = [dead_letter_of(sentinel_topology, spec["args"][0], name) for name in "ab"]
        writes = [
            ("POST", "/api/destinations/trace/pause"),
            ("POST", "/api/destinations/trace/resume"),
            ("POST", f"/api/events/{event_id}/reroute"),
            ("POST", f"/api/dead-letters/{dead[0]}/replay"),
            ("DELETE", f"/api/dead-letters/{dead[1]}"),
        ]
        replicas = sentinel_topology.replicas()
        for replica in replicas:
            replica.pause()
        try:
            for method, path in writes:
                answer = requests.request(method, base + path, headers=headers, timeout=10)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json()["detail"] == "redis replicas not confirming writes"
            pause = ("destinations", "pause", "trace")
            done = relay_command(relay_env(sentinel_topology.url()), *pause)
            assert done.returncode == 1
            assert done.stderr.splitlines() == [
                "relay: redis: written, but confirmed by 0 of the 1 replica(s) needed "
                "within 500ms (RELAY_REDIS_MIN_REPLICAS)"
            ]
        finally:
            for replica in replicas:
                replica.resume()
        sentinel_topology.wait_synced()
        for method, path in writes:
            answer = requests.request(method, base + path, headers=headers, timeout=10)
            assert answer.status_code in (200, 202, 404), (path, answer.text)
        done = relay_command(relay_env(sentinel_topology.url()), *pause)
        assert done.returncode == 0, done.stderr


def dead_letter_of(topology, event: dict, destination: str) -> str:
    """A dead letter of ``event`` for ``destination``, stored on the primary; its id."""
    store = Store(topology.primary().client(decode_responses=True), 3600, 3600)
    job = new_job(event, "all", destination, "v1", {"attempts": 1, "initial": 1.0, "max": 1.0})
    store.dead_letters.add(dead_letter(job, "HTTP 400", []))
    return job["delivery_id"]
