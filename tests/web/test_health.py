"""/readyz after an edit of the rules file that does not load: still ready, but it says so,
in every web process."""

from __future__ import annotations

import time

import requests

from relay.settings import load_settings
from relay.web.app import create_app
from tests.harness import fresh_db_url, relay_env, wait_until, web_process

GOOD = """\
version: 1
destinations:
  trace: {type: log}
routes:
  - name: all
    match: {}
    to: [trace]
"""


def test_readyz_says_the_rules_reload_failed_and_which_version_still_runs(redis_server, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD)
    client = create_app(load_settings(relay_env(redis_server.url, RELAY_RULES=str(rules))))
    client = client.test_client()
    first = client.get("/readyz").json
    assert first["checks"]["rules"] == "ok" and first["warnings"] == []
    running = first["rules_version"]

    rules.write_text(GOOD.replace("to: [trace]", "to: [nowhere]"))  # the watcher sees it
    wait_until(lambda: client.get("/readyz").json["checks"]["rules"] != "ok", 10)
    answer = client.get("/readyz")
    assert answer.status_code == 200 and answer.json["status"] == "ready"
    assert answer.json["rules_version"] == running
    assert answer.json["checks"]["rules"] == (
        f"reload failed: {rules}:7: routes[0].to[0]: undefined destination 'nowhere', "
        f"still running version {running}"
    )
    (warning,) = answer.json["warnings"]
    assert str(rules) in warning and running in warning

    rules.write_text(GOOD.replace("match: {}", "match: {kind: inbound_message}"))
    wait_until(lambda: client.get("/readyz").json["rules_version"] != running, 10)
    fixed = client.get("/readyz").json
    assert fixed["checks"]["rules"] == "ok" and fixed["warnings"] == []


def test_readyz_warns_when_redis_memory_passes_80_percent(client, redis_client):
    used = int(redis_client.info("memory")["used_memory"])
    previous = redis_client.config_get("maxmemory")["maxmemory"]
    try:
        redis_client.config_set("maxmemory", str(int(used / 0.9) + 1))
        answer = client.get("/readyz")
    finally:
        redis_client.config_set("maxmemory", previous)
    assert answer.status_code == 200
    assert any("of its maxmemory" in warning for warning in answer.json["warnings"])


def test_every_web_process_watches_the_rules_from_its_start(redis_server, tmp_path):
    """Two gunicorn processes that served nothing touching the rules: after an edit that
    does not load, every /readyz answer (each on a new connection, spread over both
    processes) says so, and /metrics agrees; after a fix, all agree again."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD)
    env = {"RELAY_RULES": str(rules), "WEB_CONCURRENCY": "2"}
    with web_process(fresh_db_url(redis_server), tmp_path / "web.log", **env) as port:
        base = f"http://127.0.0.1:{port}"

        def answers() -> list[str]:
            return [
                requests.get(f"{base}/readyz", timeout=5).json()["checks"]["rules"]
                for _ in range(24)
            ]

        def reload_gauge() -> str:
            lines = requests.get(f"{base}/metrics", timeout=5).text.splitlines()
            (line,) = [x for x in lines if x.startswith("relay_rules_last_reload_success ")]
            return line.split()[1]

        # nothing has asked these processes for the rules yet (web_process waited on /healthz)
        rules.write_text(GOOD.replace("to: [trace]", "to: [nowhere]"))
        time.sleep(2.5)  # each process's watcher looks every second
        failed = answers()
        assert all(answer.startswith("reload failed: ") for answer in failed), failed
        assert reload_gauge() == "0.0"
        rules.write_text(GOOD.replace("match: {}", "match: {kind: inbound_message}"))
        time.sleep(2.5)
        assert set(answers()) == {"ok"}
        assert reload_gauge() == "1.0"
