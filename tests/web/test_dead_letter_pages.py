"""Pages of dead letters, as the web process (gunicorn) serves them over HTTP: the admin
API's ``GET /api/dead-letters`` with cursors, the console's dead letters page and its
overview. Many dead letters, read from their indexes: a page reads its own records only."""

from __future__ import annotations

import math
import re
import time

import pytest
import requests

from relay.events import dead_letter, fallback_job, new_failure, new_job
from relay.parsing import build_events
from relay.state import Store
from relay.web.console.dead_letters import SHOWN
from tests.conftest import load_fixture
from tests.harness import web_process
from tests.web.console.conftest import ADMIN, csrf_of

AUTH = {"Authorization": f"Bearer {ADMIN}"}
RETRY = {"attempts": 3, "initial": 1.0, "max": 1.0}
RULES = """version: 1
destinations:
  crm: {type: http, url: "http://127.0.0.1:9/crm", fallback: helpdesk}
  trace: {type: log}
  helpdesk: {type: log}
routes:
  - {name: failures, to: [crm, trace]}
"""


@pytest.fixture(scope="module")
def base(redis_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    (folder / "rules.yaml").write_text(RULES)
    env = {"RELAY_ADMIN_TOKEN": ADMIN, "RELAY_RULES": str(folder / "rules.yaml")}
    with web_process(redis_server.url, folder / "web.log", **env) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def browser(base):
    """A client logged in to the console, as a browser would be."""
    with requests.Session() as session:
        form = session.get(base + "/ui/login", timeout=5)
        answer = session.post(
            base + "/ui/login",
            data={"token": ADMIN, "csrf_token": csrf_of(form.text)},
            allow_redirects=False,
            timeout=5,
        )
        assert answer.status_code == 302, answer.text
        yield session


def seed(store: Store, count: int, destinations=("crm", "trace"), start: int = 0) -> list[str]:
    """``count`` dead letters of a failed receipt, spread over ``destinations``, stored in
    one transaction as the workers store them; their ids, oldest first."""
    (event,), _ = build_events(load_fixture("receipt-failed-invalid-address.json"), "x", set())
    pipe = store.client.pipeline(transaction=True)
    ids = []
    for number in range(start, start + count):
        destination = destinations[number % len(destinations)]
        job = new_job({**event, "id": f"E{number:06d}"}, "failures", destination, "v1", RETRY)
        store.dead_letters.stage(pipe, dead_letter(job, f"HTTP 400 #{number}", []))
        ids.append(job["delivery_id"])
    pipe.execute()
    store.dead_letters.trim()
    return ids


def pages(base: str, limit: int, **params: str) -> list[dict]:
    """Every page of ``GET /api/dead-letters``, following the cursors."""
    found, cursor = [], None
    while True:
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        answer = requests.get(base + "/api/dead-letters", params=query, headers=AUTH, timeout=10)
        assert answer.status_code == 200, answer.text
        found.append(answer.json())
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return found


def listed(found: list[dict]) -> list[str]:
    return [item["id"] for page in found for item in page["dead_letters"]]


# -- the admin API ----------------------------------------------------------------------------


def test_cursors_page_through_many_dead_letters_once_each_oldest_first(base, store):
    ids = seed(store, 2500)
    found = pages(base, 400)
    assert [len(page["dead_letters"]) for page in found] == [400] * 6 + [100]
    assert {page["total"] for page in found} == {2500}
    assert listed(found) == ids  # each once, oldest first (stored in this order)
    default = requests.get(base + "/api/dead-letters", headers=AUTH, timeout=10).json()
    assert len(default["dead_letters"]) == 1000 and default["total"] == 2500


def test_paging_neither_skips_nor_repeats_while_dead_letters_come_and_go(base, store):
    ids = seed(store, 1000)
    first = requests.get(
        base + "/api/dead-letters", params={"limit": "300"}, headers=AUTH, timeout=10
    ).json()
    seen = [item["id"] for item in first["dead_letters"]]
    for did in [*seen[:20], *ids[500:520]]:  # some already shown, some not yet
        assert requests.delete(f"{base}/api/dead-letters/{did}", headers=AUTH, timeout=5).ok
    newer = seed(store, 50, start=5000)
    rest = pages(base, 300, cursor=first["next_cursor"])
    shown = seen + listed(rest)
    assert len(shown) == len(set(shown))
    assert set(shown) == set(ids) - set(ids[500:520]) | set(newer)
    assert rest[0]["total"] == 1000 - 40 + 50


def test_the_destination_filter_pages_and_counts_from_the_index(base, store):
    ids = seed(store, 900, destinations=("crm", "trace", "helpdesk"))
    for name in ("crm", "trace", "helpdesk"):
        found = pages(base, 125, destination=name)
        assert {page["total"] for page in found} == {300}
        assert sorted(listed(found)) == sorted(did for did in ids if did.endswith(":" + name))
        assert {item["destination"] for page in found for item in page["dead_letters"]} == {name}
    nobody = requests.get(
        base + "/api/dead-letters", params={"destination": "nobody"}, headers=AUTH, timeout=5
    ).json()
    assert nobody == {"dead_letters": [], "total": 0, "next_cursor": None}


def test_a_page_reads_its_own_dead_letters_not_all_of_them(base, store):
    seed(store, 2000)
    records = sum(len(store.client.get(f"relay:dead:{did}")) for did in store.dead_letters.ids())
    before = store.client.info("stats")["total_net_output_bytes"]
    answer = requests.get(
        base + "/api/dead-letters", params={"limit": "10"}, headers=AUTH, timeout=10
    )
    sent = store.client.info("stats")["total_net_output_bytes"] - before
    assert answer.status_code == 200 and len(answer.json()["dead_letters"]) == 10
    assert answer.json()["total"] == 2000
    assert sent < records / 20, f"Redis sent {sent:,} bytes for one page ({records:,} in all)"


def test_a_cursor_this_server_did_not_give_is_a_400_naming_it(base, store):
    seed(store, 3)
    for cursor in ("nonsense", "bmFuOkUx", "MTIz"):  # not base64 text; "nan:E1"; "123"
        answer = requests.get(
            base + "/api/dead-letters", params={"cursor": cursor}, headers=AUTH, timeout=5
        )
        assert answer.status_code == 400
        assert answer.json()["field"] == "cursor"
        assert answer.json()["detail"] == "not a cursor this server gave"


# -- the console --------------------------------------------------------------------------------

ROW = re.compile(r'name="ids" value="([^"]+)"')
NEXT = re.compile(r'href="([^"]+)" rel="next"')


def test_the_console_pages_dead_letters_with_a_link_to_the_next_page(base, browser, store):
    ids = seed(store, 1200)
    url, shown, pages_seen = base + "/ui/dead-letters?destination=crm&newer_than=1h", [], 0
    while url:
        page = browser.get(url, timeout=10)
        assert page.status_code == 200
        assert 'data-total="600"' in page.text
        shown += ROW.findall(page.text)
        pages_seen += 1
        link = NEXT.search(page.text)
        url = base + link.group(1).replace("&amp;", "&") if link else ""
    assert pages_seen == math.ceil(600 / SHOWN) > 1
    assert sorted(shown) == sorted(did for did in ids if did.endswith(":crm"))
    assert len(shown) == len(set(shown))
    old = browser.get(base + "/ui/dead-letters?older_than=1h", timeout=10)
    assert 'data-total="0"' in old.text and not ROW.findall(old.text)


def test_replay_all_matching_takes_the_oldest_thousand_from_the_index_alone(base, browser, store):
    ids = seed(store, 1200, destinations=("crm",))
    page = browser.get(base + "/ui/dead-letters?destination=crm", timeout=10)
    assert "Replay all 1200 matching" in page.text
    form = {
        "csrf_token": csrf_of(page.text),
        "action": "replay",
        "scope": "matching",
        "destination": "crm",
    }
    records = sum(len(store.client.get(f"relay:dead:{did}")) for did in ids)
    before = store.client.info("stats")["total_net_output_bytes"]
    confirm = browser.post(base + "/ui/dead-letters/bulk", data=form, timeout=10)
    sent = store.client.info("stats")["total_net_output_bytes"] - before
    assert confirm.status_code == 200
    assert sent < records / 20, f"Redis sent {sent:,} bytes for the ids ({records:,} in all)"
    assert 'data-confirm-count="1000"' in confirm.text
    assert "1200 match; one action takes at most 1000 (the oldest)" in confirm.text
    assert ROW.findall(confirm.text) == ids[:1000]


def test_the_overview_counts_dead_letters_by_their_destination(base, browser, store):
    seed(store, 30, destinations=("crm", "trace"))
    (event,), _ = build_events(load_fixture("receipt-failed-invalid-address.json"), "x", set())
    failed = new_job({**event, "id": "E999999"}, "failures", "crm", "v1", RETRY)
    failure = new_failure("crm", failed["delivery_id"], 3, "HTTP 503")
    to_helpdesk = fallback_job(failed, "helpdesk", RETRY, failure)  # id E999999:crm:fallback
    time.sleep(0.01)  # the newest of all
    store.dead_letters.add(dead_letter(to_helpdesk, "helpdesk refused +44 7700 900123", []))
    overview = browser.get(base + "/ui/", timeout=10).text
    counts = {
        name: re.search(rf'<tr data-destination="{name}".*?</tr>', overview, re.S).group()
        for name in ("crm", "trace", "helpdesk")
    }
    assert ">15</a>" in counts["crm"] and ">15</a>" in counts["trace"]
    assert ">1</a>" in counts["helpdesk"]
    assert "helpdesk refused +** **** **0123" in counts["helpdesk"]
    assert "HTTP 400 #28" in counts["crm"] and "HTTP 400 #29" in counts["trace"]
