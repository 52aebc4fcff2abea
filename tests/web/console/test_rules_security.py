"""What a read-only viewer can get out of the rules page, the playground and the diff, and
what a candidate may cost: against the web process (gunicorn) as it serves the console
and the admin API, with events routed into its Redis through the store's real call.

- No value the web process read from its environment reaches a client: a candidate never
  reads it (``${VAR}`` is ``<VAR>``), and what comes from the rules in force (the
  playground, a failed reload in /readyz, the console and the log) is masked.
- The rules file in force is shown with every secret written in it masked, however the
  YAML writes it.
- A candidate is held to budgets: an alias bomb, a template that never ends, too many
  routes or events are refused at once, each with one clear line.
"""

from __future__ import annotations

import time

import pytest
import requests

from relay.state import Store, connect
from tests.harness import fresh_db_url, wait_until, web_process
from tests.ops.test_search import inbound, receipt, route
from tests.rules.test_loader import ERRORS
from tests.web.console.conftest import ADMIN, VIEWER, csrf_of

ENV = {"CRM_TENANT": "tenant-s3cret-value", "CRM_TOKEN": "crm-token-s3cret-value"}
#: a rules file with secrets written in every way YAML allows, and values from ENV
RULES = """\
version: 1
destinations:
  crm:
    type: http
    url: "https://crm.example/${CRM_TENANT}/hook"
    headers:
      "X-Api-Key": quoted-key-s3cret
      X-Custom-Auth: custom-auth-s3cret
      X-Session-Token: session-token-s3cret
      X-Client-Key: client-key-s3cret
      X-Tenant: "${CRM_TENANT}"
      Authorization: "Bearer ${CRM_TOKEN}"
    body:
      status: "{{ event.kind }}"
      who: "{{ '${CRM_TOKEN}' ~ event.kind }}"
      api_key:
        next-line-s3cret
      password: hash#in-s3cret
      secret: a,b]c}d-s3cret
      credentials: |
        block-literal-s3cret
    sign:
      secret: >-
        block-folded-s3cret
  notes:
    type: log
    text: "{{ event['${CRM_TENANT}'] }}"
routes:
  - name: all
    to: [crm, notes]
"""
WRITTEN = [
    "quoted-key-s3cret",
    "custom-auth-s3cret",
    "session-token-s3cret",
    "client-key-s3cret",
    "next-line-s3cret",
    "hash#in-s3cret",
    "a,b]c}d-s3cret",
    "block-literal-s3cret",
    "block-folded-s3cret",
]


class Relay:
    def __init__(self, base: str, rules, store: Store, log) -> None:
        self.base, self.rules, self.store, self.log = base, rules, store, log

    def session(self, token: str) -> requests.Session:
        """A console session logged in with ``token``."""
        session = requests.Session()
        form = session.get(self.base + "/ui/login", timeout=10)
        answer = session.post(
            self.base + "/ui/login",
            data={"token": token, "csrf_token": csrf_of(form.text)},
            allow_redirects=False,
            timeout=10,
        )
        assert answer.status_code == 302, answer.text
        return session

    def post(self, session: requests.Session, path: str, **form: str) -> requests.Response:
        """A console form posted with the session's CSRF token."""
        token = csrf_of(session.get(self.base + "/ui/rules", timeout=10).text)
        return session.post(self.base + path, data={"csrf_token": token, **form}, timeout=60)

    def api(self, path: str, body: str | bytes, **headers: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {ADMIN}", **headers}
        return requests.post(self.base + path, data=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def relay(redis_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rules-security")
    rules = folder / "rules.yaml"
    rules.write_text(RULES)
    url = fresh_db_url(redis_server)
    env = {"RELAY_ADMIN_TOKEN": ADMIN, "RELAY_VIEWER_TOKEN": VIEWER, "RELAY_RULES": str(rules)}
    client = connect(url)
    store = Store(client, 86400, 3600)
    now = time.time()
    route(store, receipt(at=now - 20), ["all"], ["crm", "notes"])
    route(store, inbound("HELP", at=now - 10), ["all"], ["crm", "notes"])
    with web_process(url, folder / "web.log", **env, **ENV) as port:
        yield Relay(f"http://127.0.0.1:{port}", rules, store, folder / "web.log")
    client.close()


@pytest.fixture(scope="module")
def viewer(relay):
    with relay.session(VIEWER) as session:
        yield session


# -- 1. values from the environment -----------------------------------------------------------

#: routes named after the web process's secrets, to the destinations of the rules in force
PROBE = """\
version: 1
destinations: {crm: {type: log}, notes: {type: log}}
routes:
  - {name: "${RELAY_ADMIN_TOKEN}", to: [crm, notes], match: {kind: delivery_receipt}}
  - {name: "x${RELAY_REDIS_URL}", to: [crm, notes]}
"""
SECRETS = [ADMIN, "redis://127.0.0.1", *ENV.values()]


def test_a_viewer_diff_shows_placeholders_never_the_environment(relay, viewer):
    answer = relay.post(viewer, "/ui/rules/diff", candidate=PROBE, since="1h")
    assert answer.status_code == 200, answer.text
    assert "(routes all → &lt;RELAY_ADMIN_TOKEN&gt;)" in answer.text
    assert "(routes all → x&lt;RELAY_REDIS_URL&gt;)" in answer.text
    for secret in SECRETS:
        assert secret not in answer.text


def test_the_api_diff_shows_placeholders_never_the_environment(relay):
    answer = relay.api("/api/rules/diff?since=1h", PROBE)
    assert answer.status_code == 200, answer.text
    after = sorted(change["after"]["routes"][0] for change in answer.json()["changes"])
    assert after == ["<RELAY_ADMIN_TOKEN>", "x<RELAY_REDIS_URL>"]
    for secret in SECRETS:
        assert secret not in answer.text


def test_the_playground_never_shows_a_value_from_the_environment(relay, viewer):
    payload = '{"oa": "447700900123", "da": "12345", "message": "HELP", "tid": "t-1"}'
    page = relay.post(viewer, "/ui/rules/playground", payload=payload).text
    dry_run = relay.api("/api/rules/test", payload, **{"Content-Type": "application/json"})
    assert dry_run.status_code == 200, dry_run.text
    (report,) = dry_run.json()["reports"]
    crm, notes = report["deliveries"]
    assert crm["request"]["url"] == "https://crm.example/****/hook"
    assert crm["request"]["headers"]["X-Tenant"] == "****"
    assert "UndefinedError" in notes["error"]  # the event has no such field: the name masked
    for shown in (page, dry_run.text):
        assert "****" in shown
        for secret in [*ENV.values(), *WRITTEN]:
            assert secret not in shown


def test_a_failed_reload_shows_no_value_from_the_environment(relay, viewer):
    broken = RULES.replace('"https://crm.example/${CRM_TENANT}/hook"', "${CRM_TENANT}")
    relay.rules.write_text(broken)
    try:
        # each web process reloads on its own: wait for the one that answers each request
        ready = wait_until(lambda: _failed(requests.get(relay.base + "/readyz", timeout=10)))
        assert "destinations.crm.url: expected an http:// or https:// URL, got '****'" in ready
        pages = [
            wait_until(lambda path=path: _failed(viewer.get(relay.base + path, timeout=10)))
            for path in ("/ui/", "/ui/rules")
        ]
        for text in [ready, *pages, relay.log.read_text()]:
            assert ENV["CRM_TENANT"] not in text
    finally:
        relay.rules.write_text(RULES)
        wait_until(lambda: all(_reloaded(relay) for _ in range(6)), 30)


def _failed(answer: requests.Response) -> str | None:
    return answer.text if "reload failed" in answer.text else None


def _reloaded(relay: Relay) -> bool:
    answer = requests.get(relay.base + "/readyz", timeout=10)
    return answer.json()["checks"]["rules"] == "ok"


# -- 5. secrets written in the rules file ---------------------------------------------------


def test_the_rules_page_masks_every_secret_however_the_file_writes_it(relay, viewer):
    page = viewer.get(relay.base + "/ui/rules", timeout=10).text
    shown = page[page.index('id="rules-file"') :]
    for secret in [*WRITTEN, *ENV.values()]:
        assert secret not in shown
    assert "Authorization: &#34;Bearer ${CRM_TOKEN}&#34;" in shown  # references as written
    assert "api_key:\n        ****\n" in shown  # the value on its own line, masked there
    assert "secret: &gt;-\n        ****\n" in shown  # the block's header kept, its text masked
    assert shown.count("\n") >= RULES.count("\n")  # every line keeps its number


# -- 3. what a candidate may cost ---------------------------------------------------------------


def test_an_alias_bomb_is_refused_at_once_with_its_line(relay, viewer):
    bomb = (ERRORS / "alias_bomb.yaml").read_text()
    answer = relay.post(viewer, "/ui/rules/diff", candidate=bomb)
    assert answer.status_code == 400
    assert (
        "candidate.yaml:9: lol.f: more than 500,000 values once aliases are expanded" in answer.text
    )
    api = relay.api("/api/rules/diff", bomb)
    assert api.status_code == 400 and api.json()["errors"][0].startswith("candidate.yaml:9: ")


def test_a_template_that_never_ends_is_a_load_error(relay, viewer):
    blocks = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}[]"
    candidate = (
        "version: 1\ndestinations:\n  ops:\n    type: slack\n"
        "    webhook_url: https://hooks.slack.com/services/T0/B0/x\n"
        f"    blocks: '{blocks}'\nroutes: [{{name: all, to: ops}}]\n"
    )
    answer = relay.post(viewer, "/ui/rules/diff", candidate=candidate)
    assert answer.status_code == 400
    assert (
        "candidate.yaml:3: destinations.ops: blocks: template budget spent: more than 100,000 "
        "steps (loop passes and calls)" in answer.text
    )


def test_a_candidate_of_more_routes_than_allowed_is_refused(relay, viewer):
    routes = "".join(f"  - {{name: r{i}, to: t}}\n" for i in range(10_001))
    candidate = f"version: 1\ndestinations: {{t: {{type: log}}}}\nroutes:\n{routes}"
    answer = relay.api("/api/rules/diff", candidate)
    assert answer.status_code == 400
    assert answer.json()["errors"] == [
        "candidate.yaml:3: routes: 10,001 routes: more than the 10,000 allowed"
    ]


def test_a_viewer_diff_examines_at_most_a_thousand_events(relay, viewer):
    form = viewer.get(relay.base + "/ui/rules", timeout=10).text
    assert 'name="limit" value="1000"' in form
    answer = relay.post(viewer, "/ui/rules/diff", candidate=PROBE, limit="1001")
    assert answer.status_code == 400
    assert "limit: between 1 and 1,000" in answer.text
    with relay.session(ADMIN) as admin:
        assert relay.post(admin, "/ui/rules/diff", candidate=PROBE, limit="1001").ok
