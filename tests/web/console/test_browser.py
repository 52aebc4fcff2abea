"""The console in a real browser: Chromium driven by Playwright, against a running relay
(the web process under gunicorn, a real Celery worker, a local HTTP receiver).

Chromium is the system's (Debian's ``chromium`` package, or ``RELAY_TEST_CHROMIUM``),
never a browser Playwright downloads; without it these tests are skipped, saying how to
enable them. With ``RELAY_SCREENSHOTS=docs`` they also save a screenshot of each page
there (``docs/console-*.png``, shown in the README).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from relay.state import Store, connect
from relay.state.keys import deliver_member, destination
from relay.web.console.events import PAGE_SIZE
from tests.harness import ROOT, WorkerProcess, fresh_db_url, relay_env, wait_until, web_process
from tests.httpsink import Answer, HttpSink
from tests.skips import skip_or_fail

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("RELAY_TEST_CHROMIUM") or "/usr/bin/chromium"
ADMIN = "browser-admin-token"
VIEWER = "browser-viewer-token"
NUMBER = "447700900123"  #: the receipts' destination number (shown masked: ********0123)
SCREENSHOTS = os.environ.get("RELAY_SCREENSHOTS")

RULES = """
version: 1
lifecycle: {{final_receipt_within: 2s}}
destinations:
  trace:
    type: log
    text: "{{{{ event.kind }}}} {{{{ event.id }}}}"
  crm:
    type: http
    url: {url}
    timeout: 2s
    headers: {{Authorization: "Bearer crm-literal-secret"}}
    retry: {{attempts: 2, initial: 100ms, max: 200ms}}
    rate_limit: 50/s
    concurrency: 4
    circuit_breaker: {{failures: 5, cooldown: 30s}}
routes:
  - name: failures
    match: {{kind: delivery_receipt, status: [Failed, Un-Delivered]}}
    to: [crm, trace]
  - name: inbound
    match: {{kind: inbound_message}}
    to: [trace]
default: {{to: [trace]}}
"""

#: the candidate of the diff: failures no longer go to crm
CANDIDATE = """version: 1
destinations:
  trace: {type: log, text: "{{ event.id }}"}
routes:
  - name: failures
    match: {kind: delivery_receipt, status: [Failed, Un-Delivered]}
    to: [trace]
default: {to: [trace]}
"""


@pytest.fixture(scope="module")
def chromium_path():
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(
            "Chromium",
            f"none at {CHROMIUM}: `apt-get install chromium` (Debian), "
            "or set RELAY_TEST_CHROMIUM to a Chromium executable",
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path)
        yield launched
        launched.close()


class RunningRelay:
    """The web process and a worker on one Redis database, a receiver for ``crm``."""

    def __init__(self, base: str, store: Store, sink: HttpSink) -> None:
        self.base = base
        self.store = store
        self.sink = sink

    def post(self, payload: dict) -> str:
        answer = requests.post(self.base + "/webhooks/webex-connect", json=payload, timeout=5)
        assert answer.status_code == 200, answer.text
        (event_id,) = answer.json()["accepted"]
        return event_id

    def post_inbound(self, text: str) -> str:
        return self.post(
            {"oa": "447700900456", "da": "12345", "message": text, "tid": str(uuid.uuid4())}
        )

    def post_receipt(self, transid: str, status: str, code: str, at: str) -> str:
        info = {"timeStamp": at, "code": code, "destination": NUMBER, "deliveryStatus": status}
        return self.post({"deliveryInfoNotification": {"deliveryInfo": info, "transid": transid}})

    def post_failed_receipt(self) -> str:
        return self.post(
            {
                "deliveryInfoNotification": {
                    "deliveryInfo": {
                        "timeStamp": "2026-11-29T13:53:13.749+01:00",
                        "Description": "Invalid address",
                        "code": "7102",
                        "deliveryChannel": "SMS",
                        "destination": NUMBER,
                        "deliveryStatus": "Failed",
                    },
                    "transid": str(uuid.uuid4()),
                }
            }
        )

    def dead_letter(self, event_id: str) -> str:
        """Wait until the event's crm delivery is a dead letter; its id."""
        delivery = f"{event_id}:crm"
        wait_until(lambda: self.store.dead_letters.get(delivery), 20)
        return delivery

    def delivered(self, event_id: str) -> bool:
        return any(
            entry["step"] == "delivered" and entry.get("destination") == "crm"
            for entry in self.store.history(event_id)
        )


@pytest.fixture(scope="module")
def relay(redis_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("console")
    url = fresh_db_url(redis_server)
    with HttpSink() as sink:
        rules = folder / "rules.yaml"
        rules.write_text(RULES.format(url=sink.url("/crm")))
        env = {
            "RELAY_RULES": str(rules),
            "RELAY_ADMIN_TOKEN": ADMIN,
            "RELAY_VIEWER_TOKEN": VIEWER,
        }
        worker = WorkerProcess(relay_env(url, **env), folder / "worker.log").start()
        try:
            with web_process(url, folder / "web.log", **env) as port:
                client = connect(url)
                yield RunningRelay(f"http://127.0.0.1:{port}", Store(client, 3600, 3600), sink)
                client.close()
        finally:
            worker.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    yield context.new_page()
    context.close()


def log_in(page, relay: RunningRelay, token: str = ADMIN, path: str = "/ui/") -> None:
    page.goto(relay.base + path)
    assert "/ui/login" in page.url
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_selector("header nav")


def screenshot(page, name: str) -> None:
    """docs/console-<name>.png, when RELAY_SCREENSHOTS names the folder."""
    if SCREENSHOTS:
        folder = ROOT / SCREENSHOTS if not Path(SCREENSHOTS).is_absolute() else Path(SCREENSHOTS)
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"console-{name}.png"))


def test_find_a_failed_receipt_open_it_replay_its_dead_letter_and_see_it_delivered(page, relay):
    relay.sink.script(Answer(400, body='{"error": "unknown customer"}'))
    relay.post_inbound("HELP please")
    event_id = relay.post_failed_receipt()
    relay.dead_letter(event_id)

    page.goto(relay.base + "/ui/")
    screenshot(page, "login")
    log_in(page, relay, path="/ui/")
    assert page.inner_text("#counts tr[data-window='1h'] td[data-count='dead']").strip() != "0"
    assert page.is_visible("#destinations tr[data-destination='crm']")

    page.click("nav >> text=Events")
    page.locator(f"tr[data-event='{event_id}']").wait_for()
    arrived = relay.post_inbound("STOP")  # the page refreshes itself: its row appears
    page.locator(f"tr[data-event='{arrived}']").wait_for(timeout=15_000)
    screenshot(page, "events")
    page.select_option("select[name=state]", "dead")
    page.fill("input[name=status]", "Failed")
    page.click("#event-filters button[type=submit]")
    row = page.locator(f"tr[data-event='{event_id}']")
    row.wait_for()
    assert "Failed 7102" in row.inner_text()
    assert "********0123" in row.inner_text() and NUMBER not in page.content()
    assert page.locator(f"tr[data-event='{arrived}']").count() == 0  # filtered out

    row.locator("a").click()
    page.wait_for_url(f"**/ui/events/{event_id}")
    delivery = page.locator(f"section[data-delivery='{event_id}:crm']")
    assert delivery.locator("[data-state]").inner_text() == "dead_lettered"
    assert "unknown customer" in delivery.inner_text() and "400" in delivery.inner_text()
    raw = page.inner_text("pre.raw")
    assert '"deliveryStatus": "Failed"' in raw and NUMBER not in raw and "********0123" in raw
    screenshot(page, "event")

    delivery.locator("button.replay").click()
    page.wait_for_selector("#replayed")

    def delivered_on_the_page():
        page.reload()
        return page.locator(f"section[data-delivery='{event_id}:crm'] [data-state]").inner_text()

    wait_until(lambda: delivered_on_the_page() == "delivered", 20, 0.5)
    assert relay.delivered(event_id)
    assert relay.store.dead_letters.get(f"{event_id}:crm") is None
    assert [r.header("webhook-id") for r in relay.sink.requests].count(f"{event_id}:crm") == 2


def test_older_after_the_events_page_refreshed_itself_shows_the_rows_pushed_off(page, relay):
    word = "PAGE" + uuid.uuid4().hex[:8].upper()  # this test's events alone
    ids = [relay.post_inbound(f"{word} {n}") for n in range(PAGE_SIZE + 1)]
    wait_until(lambda: all(relay.store.index.state(event_id) for event_id in ids), 20)
    log_in(page, relay, path=f"/ui/events?keyword={word}")
    assert page.locator("#events tr[data-event]").count() == PAGE_SIZE  # the oldest is older
    newer = [relay.post_inbound(f"{word} again {n}") for n in range(3)]
    page.locator(f"tr[data-event='{newer[-1]}']").wait_for(timeout=15_000)  # refreshed
    page.click("#older")
    page.wait_for_url("**cursor=**")
    shown = page.locator("#events tr[data-event]").evaluate_all(
        "rows => rows.map(row => row.dataset.event)"
    )
    # the 3 rows the refresh pushed off the first page, then the oldest (by accept time,
    # then id: posts in one millisecond may have ids out of their order)
    oldest = sorted(ids, key=lambda i: (relay.store.event(i)["received_at"], i))[:4]
    assert sorted(shown) == sorted(oldest)
    assert page.locator("#older").is_hidden()


def test_pause_a_destination_from_the_overview_then_resume_it_and_see_the_backlog_sent(page, relay):
    # what the other tests sent to crm has settled: the backlog below is this test's
    wait_until(lambda: relay.store.pending.backlog().get("crm", 0) == 0, 20)
    log_in(page, relay)
    row = page.locator("#destinations tr[data-destination='crm']")
    try:
        assert row.get_attribute("data-state") == "active"
        row.locator("input[name=for]").fill("1h")
        row.locator("form.pause button[type=submit]").click()
        notice = page.locator("p.notice-ok").inner_text()
        assert re.fullmatch(r"crm paused for 1h, until [-\d]+ [:\d]+ UTC\.", notice), notice
        assert row.get_attribute("data-state") == "paused"
        assert "(in 59m" in row.locator("td.state").inner_text()
        limits = row.locator("td.limits").inner_text()
        assert "rate 50/s" in limits and "4 at once" in limits
        assert "breaker: 5 failures, 30s cooldown" in limits

        ids = [relay.post_failed_receipt() for _ in range(3)]
        members = {deliver_member(f"{event_id}:crm") for event_id in ids}
        parked = destination("crm", "parked")
        # each delivery came to the worker's gate and was parked there, spending no attempt
        wait_until(lambda: members <= relay.store.client.smembers(parked), 20)
        sent = {r.header("webhook-id") for r in relay.sink.requests}
        assert not sent & {f"{event_id}:crm" for event_id in ids}  # the sink got nothing
        assert not any(relay.delivered(event_id) for event_id in ids)
        page.reload()
        assert row.get_attribute("data-state") == "paused"
        assert row.locator("td.backlog").inner_text().split()[0] == "3"
        screenshot(page, "overview")

        row.locator("form.resume button[type=submit]").click()
        notice = page.locator("p.notice-ok").inner_text()
        assert notice == "crm resumed: 3 waiting deliveries sent again."
        assert row.get_attribute("data-state") == "active"
        wait_until(lambda: all(relay.delivered(event_id) for event_id in ids), 20)
        sent = [r.header("webhook-id") for r in relay.sink.requests]
        assert all(sent.count(f"{event_id}:crm") == 1 for event_id in ids)

        def backlog_on_the_page() -> str:
            page.reload()
            return row.locator("td.backlog").inner_text().strip()

        wait_until(lambda: backlog_on_the_page() == "0", 20, 0.5)
    finally:  # the other tests need crm as it was
        requests.post(
            f"{relay.base}/api/destinations/crm/resume",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=5,
        )


def test_the_dead_letters_page_says_how_many_it_will_replay_then_does(page, relay):
    relay.sink.script(Answer(400), Answer(400))
    first, second = relay.post_failed_receipt(), relay.post_failed_receipt()
    ids = [relay.dead_letter(first), relay.dead_letter(second)]
    log_in(page, relay, path="/ui/dead-letters?destination=crm")
    for did in ids:
        page.check(f"input[name=ids][value='{did}']")
    screenshot(page, "dead-letters")
    page.click("button[name=action][value=replay]")
    count = page.locator("[data-confirm-count]")
    assert count.get_attribute("data-confirm-count") == "2"
    assert "This will send 2 deliveries again" in count.inner_text()
    assert all(relay.store.dead_letters.get(did) for did in ids)  # nothing sent yet
    screenshot(page, "dead-letters-confirm")
    page.click("section.confirm button[type=submit]")
    assert page.locator("[data-done]").get_attribute("data-done") == "2"
    wait_until(lambda: relay.delivered(first) and relay.delivered(second), 20)


def test_the_rules_page_explains_a_payload_and_diffs_a_candidate_against_traffic(page, relay):
    relay.sink.script(Answer(200))
    event_id = relay.post_failed_receipt()
    wait_until(lambda: relay.delivered(event_id), 20)
    log_in(page, relay, path="/ui/rules")
    shown = page.inner_text("#rules-file")
    assert "crm-literal-secret" not in shown and 'Authorization: "****"' in shown

    page.click("#playground button[type=submit]")  # the sample receipt, as the page offers it
    explained = page.inner_text("#explained")
    assert "routes matched: default" in explained
    assert "routes[0] failures: status: 'Delivered' not in ['Failed', 'Un-Delivered']" in explained
    assert "default: used (no route matched)" in explained

    page.fill("#rules-diff textarea[name=candidate]", CANDIDATE)
    page.fill("#rules-diff input[name=since]", "1h")
    page.click("#rules-diff button[type=submit]")
    result = page.locator("#diff-result")
    result.wait_for()
    change = result.locator("li", has=page.locator(f"a:text-is('{event_id}')"))
    assert "crm, trace → trace" in change.inner_text()
    assert int(result.locator("[data-changed]").inner_text()) >= 1
    # the candidate's version is the file's, as `relay rules check` gives it (the browser
    # sends the textarea's lines ending in CRLF)
    version = hashlib.sha256(CANDIDATE.encode()).hexdigest()[:12]
    assert f"→ {version})" in result.inner_text()
    screenshot(page, "rules")


def test_re_routing_an_event_from_its_page_makes_a_new_delivery(page, relay):
    relay.sink.script(Answer(400))
    event_id = relay.post_failed_receipt()
    relay.dead_letter(event_id)
    log_in(page, relay, path=f"/ui/events/{event_id}")
    page.click("text=Re-route with the current rules")
    assert "routing 2" in page.inner_text("#rerouted")
    again = page.locator(f"section[data-delivery='{event_id}:crm~2']")
    again.wait_for()

    def state():
        page.reload()
        return again.locator("[data-state]").inner_text()

    wait_until(lambda: state() == "delivered", 20, 0.5)
    # the first routing's dead letter stays as it was: a re-route is a new routing
    assert page.locator(f"section[data-delivery='{event_id}:crm'] [data-state]").inner_text() == (
        "dead_lettered"
    )
    timeline = page.inner_text("ol.timeline")
    assert "rerouted" in timeline
    assert "delivered → crm (re-route 2)" in timeline  # told from the first routing's crm


def test_a_viewer_sees_the_event_but_cannot_replay_it_even_by_posting(page, relay):
    relay.sink.script(Answer(400))
    event_id = relay.post_failed_receipt()
    did = relay.dead_letter(event_id)
    log_in(page, relay, token=VIEWER, path=f"/ui/events/{event_id}")
    assert page.inner_text("[data-role]").startswith("viewer")
    assert page.locator(f"section[data-delivery='{did}'] [data-state]").inner_text() == (
        "dead_lettered"
    )
    assert page.locator("button.replay").count() == 0
    # the button is not there: post its form anyway, with this session's CSRF token
    page.evaluate(
        """([action]) => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = action;
            const token = document.querySelector("input[name=csrf_token]").cloneNode();
            form.appendChild(token);
            document.body.appendChild(form);
            form.submit();
        }""",
        [f"/ui/dead-letters/{did}/replay"],
    )
    page.wait_for_selector("section.message")
    assert "A viewer cannot replay dead letters" in page.inner_text("section.message")
    assert relay.store.dead_letters.get(did) is not None
    answer = requests.post(
        f"{relay.base}/api/dead-letters/{did}/replay",
        headers={"Authorization": f"Bearer {VIEWER}"},
        timeout=5,
    )
    assert answer.status_code == 403
    assert relay.store.dead_letters.get(did) is not None


@pytest.mark.parametrize(
    ("csrf", "status", "text"), [(None, 400, "CSRF token missing"), ("forged", 403, "wrong")]
)
def test_a_replay_without_the_right_csrf_token_is_refused(page, relay, csrf, status, text):
    relay.sink.script(Answer(400))
    event_id = relay.post_failed_receipt()
    did = relay.dead_letter(event_id)
    log_in(page, relay, path=f"/ui/events/{event_id}")
    form = page.locator(f"section[data-delivery='{did}'] form")
    form.evaluate(
        """(form, csrf) => {
            const input = form.querySelector("input[name=csrf_token]");
            if (csrf === null) input.remove(); else input.value = csrf;
        }""",
        csrf,
    )
    with page.expect_response(lambda answer: answer.request.method == "POST") as posted:
        form.locator("button.replay").click()
    assert posted.value.status == status
    assert text in page.inner_text("section.message")
    assert relay.store.dead_letters.get(did) is not None


def test_a_crafted_link_to_the_event_rows_leaves_a_logged_in_browser_on_relay(page, relay):
    with HttpSink() as attacker:
        log_in(page, relay)
        lure = f'<meta http-equiv="refresh" content="0;url={attacker.url("/phish")}">'
        page.goto(relay.base + "/ui/event-rows?" + urlencode({"since": lure}))
        # the bad filter comes back as text: shown, never parsed, so nothing can navigate
        assert page.evaluate("document.contentType") == "text/plain"
        assert page.locator("meta[http-equiv]").count() == 0
        assert lure in page.inner_text("body")
        assert page.url.startswith(relay.base + "/ui/event-rows?")
        assert attacker.requests == []


def test_the_session_cookie_is_http_only_and_strict(page, relay):
    log_in(page, relay)
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "relay_console"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui" and cookie["expires"] > 0
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    answer = requests.get(relay.base + "/api/events", params={"state": "dead"}, timeout=5)
    assert answer.status_code == 401  # the console's login is not the API's
    assert json.loads(answer.text)["error"] == "unauthorized"


def test_behind_a_tls_proxy_on_loopback_the_cookie_is_secure(relay):
    """gunicorn takes X-Forwarded-Proto from its forwarded-allow-ips (loopback by
    default) and so the request counts as HTTPS; relay adds no trust of its own."""
    proxied = requests.get(
        relay.base + "/ui/login", headers={"X-Forwarded-Proto": "https"}, timeout=5
    )
    plain = requests.get(relay.base + "/ui/login", timeout=5)
    assert "; Secure" in proxied.headers["Set-Cookie"]
    assert "Secure" not in plain.headers["Set-Cookie"]


def test_the_overview_shows_delivery_health_and_links_the_overdue_messages(page, relay):
    delivered, stuck = str(uuid.uuid4()), str(uuid.uuid4())
    for transid in (delivered, stuck):
        relay.post_receipt(transid, "Submitted", "7501", "2026-11-29T13:53:13.000+01:00")
    final = relay.post_receipt(delivered, "Delivered", "7500", "2026-11-29T13:53:55.000+01:00")
    relay.post_failed_receipt()
    wait_until(lambda: relay.store.event(final), 10)

    def overdue_event() -> str | None:  # fired 2 s after the first receipt, then routed
        events = [relay.store.event(i) or {} for i in relay.store.find(stuck)]
        return next((e["id"] for e in events if e.get("kind") == "receipt_overdue"), None)

    overdue_id = wait_until(overdue_event, 15)
    log_in(page, relay)
    row = "#delivery-health tr[data-window='1h']"
    assert int(page.inner_text(f"{row} td[data-status='Delivered']")) >= 1
    assert int(page.inner_text(f"{row} td[data-status='Failed']")) >= 1
    assert "%" in page.inner_text(f"{row} td.rate")
    assert page.inner_text(f"{row} td.time-to-final").startswith("≤ 1m / ≤ 1m")  # 42 s
    assert "7102 Invalid address" in page.inner_text(f"{row} td.codes")
    assert int(page.inner_text(f"{row} td.overdue")) >= 1
    screenshot(page, "delivery-health")
    page.click(f"{row} td.overdue a")
    page.wait_for_selector(f"tr[data-event='{overdue_id}']")
    assert "kind=receipt_overdue" in page.url
    shown = page.inner_text(f"tr[data-event='{overdue_id}']")
    assert re.search(r"overdue \d+s, last Submitted", shown), shown
