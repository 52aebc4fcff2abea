"""A local OTLP/HTTP trace receiver: ``POST /v1/traces`` with an ``ExportTraceServiceRequest``
(protobuf), as a collector takes it; every span kept, decoded, for the tests to read."""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

KINDS = {value: name.removeprefix("SPAN_KIND_") for name, value in SpanProto.SpanKind.items()}


@dataclass(frozen=True)
class Span:
    """One exported span, its ids in hex as ``traceparent`` writes them."""

    name: str
    kind: str  #: SERVER, CLIENT, CONSUMER, INTERNAL …
    trace_id: str
    span_id: str
    parent_span_id: str  #: "" for a root
    attributes: dict[str, object]
    links: list[tuple[str, str]]  #: (trace id, span id) of each link
    resource: dict[str, object]
    status: int  #: 0 unset, 1 ok, 2 error
    start_ns: int = 0
    end_ns: int = 0


@dataclass
class OtlpReceiver:
    """Serves on 127.0.0.1 (a free port) from ``start()`` until ``close()``."""

    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        """``OTEL_EXPORTER_OTLP_ENDPOINT`` for it (the exporter adds ``/v1/traces``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                found += [_span(span, resource) for span in scope_spans.spans]
        with self._lock:
            self.requests += 1
            self.spans += found
            self._lock.notify_all()

    def wait_for(self, predicate, timeout: float = 15.0) -> list[Span]:
        """The spans once ``predicate(spans)`` is true; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [(s.name, s.trace_id[:8]) for s in self.spans]
                    raise AssertionError(f"spans not exported within {timeout}s: {names}")
                self._lock.wait(left)
            return list(self.spans)

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]


def _span(span: SpanProto, resource: dict[str, object]) -> Span:
    return Span(
        name=span.name,
        kind=KINDS[span.kind],
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        attributes=_attributes(span.attributes),
        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
        resource=resource,
        status=span.status.code,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
    )


def _attributes(pairs) -> dict[str, object]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value) -> object:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, which) if which else None


def _handler_for(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":  # OTEL_EXPORTER_OTLP_COMPRESSION
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self._answer(404, b"")
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.received(request)
            self._answer(200, ExportTraceServiceResponse().SerializeToString())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
