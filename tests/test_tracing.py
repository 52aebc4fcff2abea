"""Traces end to end: a real web process (gunicorn) and a real Celery worker exporting to a
local OTLP/HTTP receiver, delivering to a local HTTP receiver; and the settings that turn
traces on, off, or are refused."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from relay import tracing
from relay.errors import SettingsError
from relay.settings import load_settings
from relay.state import Store, connect
from tests.conftest import load_fixture
from tests.harness import (
    WEBHOOK,
    WorkerProcess,
    fresh_db_url,
    relay_command,
    relay_env,
    wait_until,
    web_process,
)
from tests.httpsink import Answer, HttpSink
from tests.otlpreceiver import OtlpReceiver, Span

ENDPOINT = "http://127.0.0.1:4318"


# -- which settings turn traces on ------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "relay-eu"}, False),  # no endpoint: off
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            True,
        ),
        (  # the traces' own protocol setting comes first
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            True,
        ),
    ],
)
def test_traces_are_on_only_with_an_endpoint_and_the_sdk_not_disabled(env, on):
    assert tracing.configured(env) is on
    assert load_settings(env).traces is on


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_a_protocol_other_than_http_protobuf_is_refused_naming_the_variable(variable):
    with pytest.raises(SettingsError) as refused:
        load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, variable: "grpc"})
    assert refused.value.variable == variable
    assert "'grpc' is not supported: relay exports http/protobuf" in str(refused.value)


def test_the_command_refuses_a_grpc_protocol_with_one_line_and_status_2(redis_server):
    env = relay_env(
        redis_server.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=ENDPOINT,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    done = relay_command(env, "dlq", "list")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "relay: OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' is not supported: relay exports http/protobuf"
    ]


# -- end to end ---------------------------------------------------------------------------------

ADMIN = "tracing-admin-token-0123"
CALLER_TRACE = secrets.token_hex(16)
CALLER_SPAN = secrets.token_hex(8)
RULES = """
version: 1
destinations:
  hook:
    type: http
    url: {url}
    timeout: 2s
    retry: {{attempts: 2, initial: 100ms, max: 100ms}}
routes:
  - name: all
    match: {{}}
    to: [hook]
"""


@dataclass
class Traced:
    """A relay (web and worker processes) with its receivers."""

    port: int
    env: dict[str, str]
    sink: HttpSink
    receiver: OtlpReceiver
    store: Store
    web_log: Path
    worker_log: Path

    def post(self, text: str, traceparent: str | None = None) -> str:
        headers = {"traceparent": traceparent} if traceparent else {}
        payload = {**load_fixture("inbound-sms.json"), "message": text}
        answer = requests.post(
            f"http://127.0.0.1:{self.port}{WEBHOOK}", json=payload, headers=headers, timeout=10
        )
        assert answer.status_code == 200, answer.text
        (event_id,) = answer.json()["accepted"]
        return event_id

    def spans_of(self, event_id: str, count: int) -> list[Span]:
        """The spans whose ``relay.event_id`` is ``event_id``, once ``count`` were exported."""

        def of(spans: list[Span]) -> list[Span]:
            return [s for s in spans if s.attributes.get("relay.event_id") == event_id]

        return of(self.receiver.wait_for(lambda spans: len(of(spans)) >= count))


@contextlib.contextmanager
def traced_relay(redis_server, tmp_path: Path, **otel: str) -> Iterator[Traced]:
    """Web and worker with ``otel`` variables, a receiver of deliveries and one of traces."""
    with HttpSink() as sink, OtlpReceiver() as receiver:
        url = fresh_db_url(redis_server)
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(url=sink.url("/hook")))
        extra = {
            "RELAY_RULES": str(rules),
            "RELAY_LOG_FORMAT": "json",
            "RELAY_ADMIN_TOKEN": ADMIN,
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: spans leave at once
            **{key: value.format(endpoint=receiver.endpoint) for key, value in otel.items()},
        }
        env = relay_env(url, **extra)
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            with web_process(url, tmp_path / "web.log", **extra) as port:
                store = Store(connect(url), 3600, 3600)
                yield Traced(
                    port, env, sink, receiver, store, tmp_path / "web.log", tmp_path / "worker.log"
                )
        finally:
            worker.stop()


@pytest.fixture
def relay_traced(redis_server, tmp_path):
    with traced_relay(
        redis_server,
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT="{endpoint}",
        OTEL_SERVICE_NAME="relay-t",
    ) as relay:
        yield relay


def one(spans: list[Span], name: str) -> Span:
    (found,) = [span for span in spans if span.name == name]
    return found


@pytest.mark.e2e
def test_a_callback_is_one_trace_request_route_attempt_continuing_the_callers(relay_traced):
    relay = relay_traced
    event_id = relay.post("hello", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    spans = relay.spans_of(event_id, 3)
    request = one(spans, f"POST {WEBHOOK}")
    route = one(spans, "route")
    attempt = one(spans, "deliver hook")
    assert {span.trace_id for span in spans} == {CALLER_TRACE}
    assert (request.kind, request.parent_span_id) == ("SERVER", CALLER_SPAN)
    assert (route.kind, route.parent_span_id) == ("CONSUMER", request.span_id)
    assert (attempt.kind, attempt.parent_span_id) == ("CLIENT", route.span_id)
    assert request.attributes["http.response.status_code"] == 200
    assert request.resource["service.name"] == "relay-t"
    assert (request.resource["relay.process"], route.resource["relay.process"]) == (
        "web",
        "worker",
    )
    assert route.attributes["relay.destinations"] == ["hook"]
    assert route.attributes["relay.routes"] == ["all"]
    assert attempt.attributes["relay.delivery_id"] == f"{event_id}:hook"
    assert attempt.attributes["relay.destination"] == "hook"
    assert attempt.attributes["relay.destination.type"] == "http"
    assert attempt.attributes["relay.outcome"] == "ok"
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["relay.attempt"] == 1
    # the receiver's own trace continues the attempt's
    (delivered,) = relay.sink.wait_for(1)
    assert delivered.header("traceparent") == f"00-{CALLER_TRACE}-{attempt.span_id}-01"
    # data is data: no message text, no phone number in any attribute
    said = json.dumps([[span.attributes, span.resource] for span in spans])
    assert "hello" not in said and "441157070619" not in said


@pytest.mark.e2e
def test_json_log_lines_carry_the_trace_and_span_ids(relay_traced):
    relay = relay_traced
    event_id = relay.post("log me", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    spans = relay.spans_of(event_id, 3)
    request, route = one(spans, f"POST {WEBHOOK}"), one(spans, "route")
    attempt = one(spans, "deliver hook")

    def line(log: Path, step: str) -> dict:
        def found() -> dict | None:
            lines = (x for x in json_lines(log) if x.get("event_id") == event_id)
            return next((x for x in lines if x.get("step") == step), None)

        return wait_until(found)

    accepted = line(relay.web_log, "accepted")
    assert (accepted["trace_id"], accepted["span_id"]) == (CALLER_TRACE, request.span_id)
    routed = line(relay.worker_log, "routed")
    assert (routed["trace_id"], routed["span_id"]) == (CALLER_TRACE, route.span_id)
    success = line(relay.worker_log, "success")
    assert (success["trace_id"], success["span_id"]) == (CALLER_TRACE, attempt.span_id)


def json_lines(log: Path) -> list[dict]:
    return [json.loads(text) for text in log.read_text().splitlines() if text.startswith("{")]


@pytest.mark.e2e
def test_a_retry_is_a_second_attempt_span_in_the_same_trace(relay_traced):
    relay = relay_traced
    relay.sink.fail_first_attempts(503)
    event_id = relay.post("retry me")
    spans = relay.spans_of(event_id, 4)
    route = one(spans, "route")
    attempts = sorted(
        (span for span in spans if span.name == "deliver hook"),
        key=lambda span: span.attributes["relay.attempt"],
    )
    assert [span.attributes["relay.attempt"] for span in attempts] == [1, 2]
    assert [span.attributes["relay.outcome"] for span in attempts] == ["transient", "ok"]
    assert [span.attributes["http.response.status_code"] for span in attempts] == [503, 200]
    assert [span.status for span in attempts] == [2, 0]  # error, then unset
    assert {span.trace_id for span in spans} == {route.trace_id}
    assert {span.parent_span_id for span in attempts} == {route.span_id}
    first, second = relay.sink.wait_for(2)
    assert first.header("traceparent").split("-")[1] == route.trace_id
    # sampled (and, a trace relay began, a random trace id: W3C flags 03)
    assert second.header("traceparent") == f"00-{route.trace_id}-{attempts[1].span_id}-03"


@pytest.mark.e2e
def test_a_replay_and_a_reroute_are_new_traces_linked_to_the_original(relay_traced):
    relay = relay_traced
    relay.sink.script(Answer(400, body="bad field"))  # the first attempt fails for good
    event_id = relay.post("replay me")
    first = relay.spans_of(event_id, 3)
    route, failed = one(first, "route"), one(first, "deliver hook")
    assert failed.attributes["relay.outcome"] == "permanent"
    wait_until(lambda: relay.store.dead_letters.get(f"{event_id}:hook"))

    done = relay_command(relay.env, "dlq", "replay", f"{event_id}:hook")
    assert done.returncode == 0, done.stderr
    spans = relay.spans_of(event_id, 5)
    replay = one(spans, "replay")
    assert replay.resource["relay.process"] == "cli"
    assert replay.trace_id != route.trace_id and replay.parent_span_id == ""
    assert replay.links == [(route.trace_id, route.span_id)]  # the trace it came from
    again = [s for s in spans if s.name == "deliver hook" and s.trace_id == replay.trace_id]
    assert [(s.parent_span_id, s.attributes["relay.outcome"]) for s in again] == [
        (replay.span_id, "ok")
    ]

    answer = requests.post(
        f"http://127.0.0.1:{relay.port}/api/events/{event_id}/reroute",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    spans = relay.spans_of(event_id, 7)
    reroute = one(spans, "reroute")
    assert reroute.resource["relay.process"] == "web"
    assert reroute.trace_id not in (route.trace_id, replay.trace_id)
    assert reroute.links == [(route.trace_id, route.span_id)]
    rerouted = [s for s in spans if s.trace_id == reroute.trace_id and s.name == "deliver hook"]
    assert [s.attributes["relay.delivery_id"] for s in rerouted] == [f"{event_id}:hook~2"]
    assert rerouted[0].parent_span_id == reroute.span_id


@pytest.mark.e2e
@pytest.mark.parametrize(
    "otel",
    [
        {},  # no endpoint: off
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{endpoint}", "OTEL_SDK_DISABLED": "true"},
    ],
    ids=["no-endpoint", "sdk-disabled"],
)
def test_with_traces_off_nothing_is_exported_and_no_traceparent_is_sent(
    redis_server, tmp_path, otel
):
    with traced_relay(redis_server, tmp_path, **otel) as relay:
        event_id = relay.post("quiet", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
        wait_until(lambda: any(e["step"] == "delivered" for e in relay.store.history(event_id)))
        (delivered,) = relay.sink.wait_for(1)
        assert delivered.header("traceparent") is None
        assert delivered.header("tracestate") is None
        # the attempt's log line is written after the history records the delivery
        wait_until(
            lambda: any(line.get("step") == "success" for line in json_lines(relay.worker_log))
        )
        logged = json_lines(relay.web_log) + json_lines(relay.worker_log)
        assert not any("trace_id" in line for line in logged)
    # the processes have stopped (flushing whatever they had): the receiver got nothing
    assert relay.receiver.requests == 0 and relay.receiver.spans == []


@pytest.mark.e2e
def test_a_retry_run_by_a_prefork_pool_child_exports_from_the_child(redis_server, tmp_path):
    """The retry is a relay.deliver task: with the prefork pool a forked child runs it, with
    a tracer provider of its own (the parent's export thread is not in the child)."""
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": "{endpoint}", "RELAY_WORKER_POOL": "prefork"}
    with traced_relay(redis_server, tmp_path, RELAY_WORKER_CONCURRENCY="1", **otel) as relay:
        relay.sink.fail_first_attempts(503)
        event_id = relay.post("fork me")
        spans = relay.spans_of(event_id, 4)
        route = one(spans, "route")
        attempts = sorted(
            (span for span in spans if span.name == "deliver hook"),
            key=lambda span: span.attributes["relay.attempt"],
        )
        assert [span.attributes["relay.outcome"] for span in attempts] == ["transient", "ok"]
        assert {span.parent_span_id for span in attempts} == {route.span_id}
        assert {span.trace_id for span in spans} == {route.trace_id}
        # the first attempt in the main process (the intake), the retry in a pool child:
        # two processes, each with its provider (the SDK's service.instance.id is per process)
        processes = {span.resource["service.instance.id"] for span in attempts}
        assert len(processes) == 2
