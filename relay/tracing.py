"""Traces: OpenTelemetry spans exported over OTLP/HTTP, when an endpoint is configured.

The only module of relay that imports OpenTelemetry; the others call its small functions.
It is configured by the standard variables alone, which the SDK reads itself:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``),
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]``,
``OTEL_BSP_*``, ``OTEL_SDK_DISABLED``; relay checks ``OTEL_EXPORTER_OTLP_PROTOCOL`` (only
``http/protobuf``). With no endpoint, tracing is off: every function returns at its first
line (``enabled`` is False) and OpenTelemetry is not even imported.

Each process builds its own provider with :func:`start`, after any fork (a gunicorn
worker, a Celery pool child: the batch processor's export thread does not survive a
fork), and flushes it with :func:`stop` as it exits.

The spans of one event, in one trace:

- ``POST /webhooks/webex-connect…`` (SERVER): the webhook request, continuing the
  caller's ``traceparent``;
- ``route`` (CONSUMER), one per event, in the worker: a child of the request through the
  context stored with the inbox record (:func:`context`);
- ``deliver <destination>`` (CLIENT), one per attempt, a child of the routing through the
  context each delivery's job carries (retries are later spans of the same trace);
- ``replay`` and ``reroute`` (INTERNAL): new traces, linked to the one they came from.

Attributes carry ids, names, kinds and statuses; never message text, callbackData or a
phone number.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from relay.errors import SettingsError

#: True once :func:`start` built this process's provider; what every function checks first
enabled = False

PROTOCOL = "http/protobuf"  #: the one OTLP protocol relay exports with
SERVICE_NAME = "relay"  #: ``service.name`` unless OTEL_SERVICE_NAME or the attributes say
CONTEXT_HEADERS = ("traceparent", "tracestate")  #: W3C trace context

Carrier = dict[str, str]  #: ``{"traceparent": …, "tracestate": …}``, as stored and sent
Span = Any  #: an OpenTelemetry span (None when tracing is off)

_NOTHING: AbstractContextManager[None] = nullcontext()
_otel: Any = None  #: the OpenTelemetry modules and this process's tracer, once started
_provider: Any = None


def configured(env: Mapping[str, str]) -> bool:
    """Whether ``env`` turns traces on: an OTLP endpoint set and the SDK not disabled.
    A protocol other than http/protobuf is a SettingsError naming its variable."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if not any(env.get(name, "").strip() for name in endpoints):
        return False
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(name, "").strip()
        if value:  # the traces' own setting, else the general one
            if value != PROTOCOL:
                raise SettingsError(name, f"{value!r} is not supported: relay exports {PROTOCOL}")
            break
    return True


# -- the provider -------------------------------------------------------------------------


def start(process: str) -> bool:
    """Build this process's tracer provider, batch processor and OTLP exporter, when the
    environment asks for traces (:func:`configured`); ``process`` (web, worker, cli) goes
    into the resource as ``relay.process``. Call it after forking. True when on."""
    global enabled, _otel, _provider
    if not configured(os.environ):
        return False
    from opentelemetry import context, trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    resource = Resource.create({"relay.process": process})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=True)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))

    class Otel:
        pass

    otel = Otel()
    otel.context, otel.trace = context, trace  # type: ignore[attr-defined]
    otel.propagator = TraceContextTextMapPropagator()  # type: ignore[attr-defined]
    otel.tracer = provider.get_tracer("relay")  # type: ignore[attr-defined]
    _otel, _provider = otel, provider
    enabled = True
    return True


def stop() -> None:
    """Export what is buffered and stop the exporter (a process that exits)."""
    global enabled
    if _provider is not None and enabled:
        enabled = False
        _provider.shutdown()


def _forget_after_fork() -> None:
    """In a forked child the parent's provider is not its own: off until it starts one."""
    global enabled, _provider
    enabled, _provider = False, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


# -- carrying the context -------------------------------------------------------------------


def context() -> Carrier | None:
    """The current span's W3C trace context, to store with a record or task that another
    process picks up (None when off or outside a span)."""
    if not enabled:
        return None
    found = _otel.trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    # written here rather than by the propagator: a fifth of its cost, per accepted request
    carrier = {
        "traceparent": f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}"
    }
    if found.trace_state:
        carrier["tracestate"] = found.trace_state.to_header()
    return carrier


def inject(headers: MutableMapping[str, str]) -> None:
    """Add ``traceparent`` (and ``tracestate``) of the current span to outgoing headers."""
    if enabled:
        _otel.propagator.inject(headers)


def _parent(carrier: Mapping[str, str] | None) -> Any:
    """The context a carried trace context stands for (a root when there is none)."""
    return _otel.propagator.extract(carrier or {}, _otel.context.Context())


def log_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids in hex, for a log line; None outside one."""
    if not enabled:
        return None
    found = _otel.trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return f"{found.trace_id:032x}", f"{found.span_id:016x}"


# -- the spans ------------------------------------------------------------------------------


def request(environ: Mapping[str, Any], route: str, source: str) -> Any:
    """Start the SERVER span of a webhook request, continuing the caller's
    ``traceparent``, and make it current; end it with :func:`end_request`."""
    if not enabled:
        return None
    carrier = {"traceparent": environ.get("HTTP_TRACEPARENT", "")}
    if environ.get("HTTP_TRACESTATE"):
        carrier["tracestate"] = environ["HTTP_TRACESTATE"]
    span = _otel.tracer.start_span(
        f"POST {route}",
        context=_parent(carrier),
        kind=_otel.trace.SpanKind.SERVER,
        # few attributes: encoding them is most of what exporting a span costs
        attributes={"http.request.method": "POST", "http.route": route, "relay.source": source},
    )
    token = _otel.context.attach(_otel.trace.set_span_in_context(span))
    return span, token


def end_request(started: Any, status: int, accepted: list[str], duplicates: int) -> None:
    """End the span :func:`request` started: the answer's status, and the events."""
    if started is None:
        return
    span, token = started
    span.set_attribute("http.response.status_code", status)
    if len(accepted) == 1:
        span.set_attribute("relay.event_id", accepted[0])
    else:  # a batch (or none): their ids are on their routing spans
        span.set_attribute("relay.events.accepted", len(accepted))
    if duplicates:
        span.set_attribute("relay.events.duplicates", duplicates)
    if status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(_otel.trace.StatusCode.ERROR)
    _otel.context.detach(token)
    span.end()


def routing(event: Mapping[str, Any], carried: Mapping[str, str] | None) -> Any:
    """The CONSUMER span of routing ``event`` in a worker, as a context manager: a child
    of the request that accepted it (``carried``: the context stored with it)."""
    if not enabled:
        return _NOTHING
    return _otel.tracer.start_as_current_span(
        "route",
        context=_parent(carried),
        kind=_otel.trace.SpanKind.CONSUMER,
        attributes={
            "relay.event_id": event.get("id", ""),
            "relay.event.kind": event.get("kind", ""),
            "relay.source": event.get("source", ""),
        },
    )


def routed(span: Span, routes: list[str], destinations: list[str], rules_version: str) -> None:
    """What the routing came to: the routes matched and the destinations."""
    if span is not None:
        span.set_attribute("relay.routes", routes)
        span.set_attribute("relay.destinations", destinations)
        span.set_attribute("relay.rules_version", rules_version)


def attempt(job: Mapping[str, Any], kind: str, number: int) -> Any:
    """The CLIENT span of one delivery attempt, as a context manager: a child of the span
    whose context ``job`` carries (its routing, or the replay that sent it again)."""
    if not enabled:
        return _NOTHING
    return _otel.tracer.start_as_current_span(
        f"deliver {job['destination']}",
        context=_parent(job.get("trace")),
        kind=_otel.trace.SpanKind.CLIENT,
        attributes={
            "relay.event_id": job["event"].get("id", ""),
            "relay.delivery_id": job["delivery_id"],
            "relay.route": job.get("route") or "",
            "relay.destination": job["destination"],
            "relay.destination.type": kind,
            "relay.attempt": number,
        },
    )


def attempted(span: Span, outcome: str, status: int | None) -> None:
    """The attempt's outcome (ok, transient, permanent) and the status code answered."""
    if span is None:
        return
    span.set_attribute("relay.outcome", outcome)
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if outcome != "ok":
        span.set_attribute("error.type", str(status) if status is not None else outcome)
        span.set_status(_otel.trace.StatusCode.ERROR, outcome)


def operation(name: str, attributes: Mapping[str, Any], linked: Any = None) -> Any:
    """An operator's action on stored work (``replay``, ``reroute``) as a context manager:
    a new trace, linked to the one the work came from (``linked``: a carried context, or
    a ``traceparent`` text)."""
    if not enabled:
        return _NOTHING
    if isinstance(linked, str):
        linked = {"traceparent": linked}
    origin = _otel.trace.get_current_span(_parent(linked)).get_span_context()
    links = [_otel.trace.Link(origin)] if origin.is_valid else []
    return _otel.tracer.start_as_current_span(
        name,
        context=_otel.context.Context(),
        kind=_otel.trace.SpanKind.INTERNAL,
        attributes=dict(attributes),
        links=links,
    )
