"""The boundary between the door and the worker, as a property: whatever notification the
door takes, the worker routes. Hypothesis generates notifications (every documented field,
any Unicode — lone surrogates and non-characters included — any JSON type, batches); each
goes through parsing as the web reads a body, then, unless parsing refused it with a 400
naming a field, through ``route_event`` against the suite's real Redis: stored and routed,
never raising, never dead-lettered as unroutable.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.errors import PayloadError
from relay.events import ROUTING, delivery_id
from relay.parsing import build_events, decode
from relay.web.ingest import check_limits
from relay.worker.routing import route_event
from tests.harness import in_process_runtime

TEXT = (
    "{{ event.kind }} {{ event.code | default('') }} {{ event.text | default('') }} "
    "{{ event.callback | default({}) | tojson }} {{ event.raw | tojson }}"
)
RULES = f"""
version: 1
destinations:
  trace: {{type: log, text: "{TEXT}"}}
routes: [{{name: all, to: [trace]}}]
"""

ODD = ["\ud800", "\udfff", "\ud83d\ude00", "\ufffe", "\uffff", "\U0010ffff", "\x00", "\u202e"]
TEMPLATE_SYNTAX = ["{{ 7*7 }}", "{% raw %}", "{#", "${jndi:x}"]
texts = st.text(max_size=12) | st.lists(
    st.sampled_from(ODD + TEMPLATE_SYNTAX) | st.text(max_size=3), max_size=4
).map("".join)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
callbacks = texts | st.builds(
    lambda v: json.dumps(v, ensure_ascii=False), st.dictionaries(texts, values, max_size=3)
)


#: mostly text, as the vendor sends, sometimes any JSON value (a number is read as text)
field_values = st.one_of(texts, texts, texts, texts, st.integers(), values)


def fields(names: list[str], required: list[str] = ()) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {name: field_values for name in required},
        optional={name: field_values for name in names} | {"extra": values},
    )


receipts = st.builds(
    lambda info, top, callback: {
        "deliveryInfoNotification": {**top, "deliveryInfo": info, "callbackData": callback}
    },
    fields(
        ["code", "Description", "additionalInfo", "destination", "destinationType"]
        + ["deliveryChannel", "timeStamp"],
        ["deliveryStatus"],
    ),
    fields(["transid", "subtid", "correlationid"]),
    callbacks | field_values,
)
messages = fields(
    ["tid", "userId", "userld", "channel", "x_networkid", "datetime", "ts"], ["oa", "da", "message"]
)
notifications = receipts | messages
documents = notifications | st.lists(notifications, min_size=1, max_size=3)


@pytest.fixture(scope="module")
def runtime(redis_server):
    runtime, _, _ = in_process_runtime(redis_server.url, RULES)
    return runtime


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=documents, ascii_only=st.booleans())
def test_what_parsing_accepts_is_stored_and_routed(runtime, document, ascii_only):
    body = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        parsed = decode(body)
        check_limits(parsed)
        events, fingerprints = build_events(parsed, "default", frozenset())
    except PayloadError as refused:
        assert refused.status == 400 and refused.field, refused
        return
    store = runtime.store
    unique = [fp + event["id"] for fp, event in zip(fingerprints, events, strict=True)]
    assert store.accept(unique, events) == [True] * len(events)
    for event in events:
        assert route_event(runtime, event) == ["delivered"], event
        assert store.dead_letters.get(delivery_id(event["id"], ROUTING)) is None
        assert store.event(event["id"]) is not None
