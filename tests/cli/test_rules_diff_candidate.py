"""``relay rules diff`` reads its candidate as the admin API does: without the environment."""

from __future__ import annotations

import json

from relay.state import Store, connect
from tests.cli.test_rules_commands import relay
from tests.harness import fresh_db_url, relay_env
from tests.ops.test_search import NOW, receipt, route

RULES = "version: 1\ndestinations: {trace: {type: log}}\nroutes: [{name: all, to: trace}]\n"
CANDIDATE = RULES.replace("name: all", 'name: "x${CLI_DIFF_SECRET}"')


def test_a_candidate_file_gets_placeholders_never_the_environment(redis_server, tmp_path):
    url = fresh_db_url(redis_server)
    client = connect(url)
    route(Store(client, 86400, 3600), receipt(at=NOW - 5), ["all"], ["trace"])
    client.close()
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "candidate.yaml").write_text(CANDIDATE)
    env = relay_env(url, RELAY_RULES=str(tmp_path / "rules.yaml"))
    env["CLI_DIFF_SECRET"] = "cli-s3cret-value"
    done = relay("rules", "diff", str(tmp_path / "candidate.yaml"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    (change,) = json.loads(done.stdout)["changes"]
    assert change["after"]["routes"] == ["x<CLI_DIFF_SECRET>"]
    assert "cli-s3cret-value" not in done.stdout + done.stderr
