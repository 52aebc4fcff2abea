"""OAuth2 client credentials for http destinations, against a real token endpoint and a
receiver that checks the tokens it issued (tests/actions/oauth2_endpoint.py): one token
per destination per process, fetched again when it expires or is refused; the endpoint's
failures classified like a delivery's, and neither the secret nor a token in any outcome."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from relay.actions import close_session
from relay.actions.oauth2 import TOKENS
from relay.actions.registry import prepare, send
from relay.rules import HttpDestination, load_rules_text
from relay.settings import load_settings
from relay.worker.delivery import deliver_job
from tests.actions.oauth2_endpoint import TokenEndpoint
from tests.harness import in_process_runtime, pending_job, wait_until
from tests.httpsink import Answer, HttpSink, Recorded, closed_port

SECRET = "client-s3cret-value"
SETTINGS = load_settings({"RELAY_REDIS_URL": "redis://127.0.0.1:6379/0"})
RULES = """
version: 1
destinations:
  crm:
    type: http
    url: "{url}"
    timeout: 5s
    retry: {{attempts: 3, initial: 1s, max: 1s}}
    auth:
      oauth2:
        token_url: "{token_url}"
        client_id: relay
        client_secret: "{secret}"
        scope: [sms.write, sms.read]
        audience: https://crm.internal
routes: [{{name: all, to: [crm]}}]
"""
JOB = {
    "delivery_id": "01EVENT:crm",
    "event": {"id": "01EVENT", "kind": "delivery_receipt", "raw": {}},
    "route": "all",
    "destination": "crm",
}


def rules(receiver: HttpSink, token_url: str, secret: str = SECRET) -> str:
    return RULES.format(url=receiver.url("/hook"), token_url=token_url, secret=secret)


def deliver(text: str):
    target = load_rules_text(text).destinations["crm"]
    assert isinstance(target, HttpDestination)
    return send(target, prepare(target, JOB, SETTINGS), JOB, SETTINGS)


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    with TokenEndpoint() as server:
        yield server
    TOKENS.clear()
    close_session()


@pytest.fixture
def receiver(endpoint: TokenEndpoint) -> Iterator[HttpSink]:
    """A receiver that accepts the endpoint's live tokens only."""
    with HttpSink() as sink:
        sink.respond = endpoint.guard
        yield sink


def bearers(sink: HttpSink) -> list[str]:
    return [(r.header("Authorization") or "").removeprefix("Bearer ") for r in sink.requests]


def test_the_token_request_is_client_credentials_with_http_basic(
    endpoint: TokenEndpoint, receiver: HttpSink
) -> None:
    assert deliver(rules(receiver, endpoint.url)).ok
    (request,) = endpoint.sink.requests
    assert request.method == "POST" and request.path == "/oauth2/token"
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    assert (
        request.header("Authorization")
        == "Basic " + base64.b64encode(f"relay:{SECRET}".encode()).decode()
    )
    assert parse_qs(request.body.decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["sms.write sms.read"],
        "audience": ["https://crm.internal"],
    }
    assert SECRET not in request.body.decode()
    (token,) = bearers(receiver)
    assert endpoint.live(token)


def test_64_concurrent_deliveries_fetch_one_token(
    endpoint: TokenEndpoint, receiver: HttpSink
) -> None:
    text = rules(receiver, endpoint.url)
    start = threading.Barrier(64)
    outcomes: list = []

    def one() -> None:
        start.wait()
        outcomes.append(deliver(text))

    threads = [threading.Thread(target=one) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [outcome.kind for outcome in outcomes] == ["ok"] * 64
    assert endpoint.calls == 1
    assert len(set(bearers(receiver))) == 1 and len(receiver.requests) == 64


def test_a_token_is_fetched_again_once_it_expires(receiver: HttpSink) -> None:
    with TokenEndpoint(lifetime=2) as short:
        receiver.respond = short.guard
        text = rules(receiver, short.url)
        assert deliver(text).ok
        (first,) = bearers(receiver)
        wait_until(lambda: not short.live(first), timeout=5)  # its 2 s have passed
        assert deliver(text).ok
        assert short.calls == 2
        assert [status for _, status in receiver.answered()] == [200, 200]  # never sent stale
        assert bearers(receiver)[1] != first
    TOKENS.clear()


def test_a_401_fetches_a_new_token_and_sends_once_more(
    endpoint: TokenEndpoint, receiver: HttpSink
) -> None:
    text = rules(receiver, endpoint.url)
    assert deliver(text).ok
    (first,) = bearers(receiver)
    endpoint.revoke(first)  # the receiver refuses it from now on, long before it expires
    outcome = deliver(text)
    assert outcome.ok, outcome.error
    assert endpoint.calls == 2
    assert [status for _, status in receiver.answered()] == [200, 401, 200]
    assert bearers(receiver)[1] == first and bearers(receiver)[2] != first


def test_a_second_401_is_permanent_and_its_error_shows_no_token(
    endpoint: TokenEndpoint, receiver: HttpSink
) -> None:
    def refuse_every_token(request: Recorded) -> Answer:
        given = (request.header("Authorization") or "").removeprefix("Bearer ")
        return Answer(401, {"Content-Type": "text/plain"}, f"token {given} is revoked")

    receiver.respond = refuse_every_token
    outcome = deliver(rules(receiver, endpoint.url))
    assert outcome.kind == "permanent" and outcome.status == 401
    assert len(receiver.requests) == 2 and endpoint.calls == 2  # one refresh, one retry
    first, second = bearers(receiver)
    assert first != second and {first, second} == set(endpoint.issued)
    assert outcome.error == "HTTP 401: token **** is revoked"


def test_a_token_endpoint_503_is_transient_and_the_attempt_retried(
    redis_server, endpoint: TokenEndpoint, receiver: HttpSink
) -> None:
    runtime, store, scheduler = in_process_runtime(redis_server.url, rules(receiver, endpoint.url))
    job = pending_job(runtime, "crm", {"attempts": 3, "initial": 1, "max": 1})
    endpoint.sink.script(Answer(503, {"Retry-After": "0"}, "overloaded"))
    assert deliver_job(runtime, job) == "retry"
    assert receiver.requests == [] and store.dead_letters.get(job["delivery_id"]) is None
    ((again, countdown),) = scheduler.calls
    assert countdown == 0  # the endpoint's Retry-After
    assert deliver_job(runtime, again) == "delivered"
    assert endpoint.calls == 2 and len(receiver.requests) == 1


def test_a_token_endpoint_refusing_the_client_is_dead_lettered_with_its_error(
    redis_server, receiver: HttpSink
) -> None:
    with TokenEndpoint(client_secret="another-secret", explain=f" ({SECRET})") as strict:
        runtime, store, scheduler = in_process_runtime(
            redis_server.url, rules(receiver, strict.url)
        )
        job = pending_job(runtime, "crm", {"attempts": 3, "initial": 1, "max": 1})
        assert deliver_job(runtime, job) == "dead_lettered"
    TOKENS.clear()
    assert scheduler.calls == [] and receiver.requests == []
    record = store.dead_letters.get(job["delivery_id"])
    assert record is not None
    assert (
        record["reason"] == "oauth2 token: 401 invalid_client: Client authentication failed (****)"
    )


def test_a_token_endpoint_that_cannot_be_reached_is_transient(receiver: HttpSink) -> None:
    outcome = deliver(rules(receiver, f"http://127.0.0.1:{closed_port()}/token"))
    TOKENS.clear()
    assert outcome.kind == "transient"
    assert outcome.error is not None
    assert outcome.error.startswith("oauth2 token: connection failed: ")
    assert receiver.requests == []


def test_a_token_answer_without_a_token_is_permanent(receiver: HttpSink) -> None:
    with HttpSink(Answer(200, {"Content-Type": "text/html"}, "<html>login</html>")) as page:
        outcome = deliver(rules(receiver, page.url("/token")))
    TOKENS.clear()
    assert outcome.kind == "permanent"
    assert outcome.error == "oauth2 token: the answer holds no access_token"


def test_a_failed_fetch_answers_every_thread_that_waited_for_it(
    endpoint: TokenEndpoint, receiver: HttpSink
) -> None:
    """16 deliveries at once while the endpoint takes 2 s to answer 503: one request."""
    endpoint.sink.script(Answer(503, delay=2.0))
    text = rules(receiver, endpoint.url)
    start = threading.Barrier(16)
    outcomes: list = []

    def one() -> None:
        start.wait()
        outcomes.append(deliver(text))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {outcome.error for outcome in outcomes} == {"oauth2 token: HTTP 503"}
    assert endpoint.calls == 1
