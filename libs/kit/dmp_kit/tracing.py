"""Traces: the OpenTelemetry SDK of one process, its spans exported by OTLP/HTTP or to a file.

Off unless `DMP_OTLP_ENDPOINT` or `DMP_TRACE_FILE` is set; then nothing here costs more than
a test of one global (the instrumentations are not even installed).

What a span may say is an allow-list (SAFE_ATTRIBUTES), applied to every span before it leaves
the process: an instrumentation that records a raw URL path (`/v1/dossiers/{INS}/…`), a query, a
peer address, a database statement or an exception's message loses it here, whatever its
version does by default. Span names come from route templates, RPC methods, database command
names and event subjects, none of which holds a patient's data.

Across NATS the trace context travels twice: in the event's envelope (written with the change
into the outbox, long before it is published: its `trace` is the span of the request that made
it) and in the `traceparent` header of the message, which names the publish span. A consumer's
span is the child of the header's context when there is one, else of the envelope's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.pymongo import CommandTracer
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    TraceFlags,
)
from opentelemetry.util.types import Attributes
from pymongo import monitoring

from dmp.events.v1 import envelope_pb2
from dmp_kit.context import Trace, current_trace, entry_trace, parse_traceparent

# Every attribute a span may carry out of the process: methods, templates, status codes, system
# and operation names, collection and subject names. Not: url.path, url.query, http.target,
# http.url, client or peer addresses, user agents, db.statement, db.query.text.
SAFE_ATTRIBUTES = frozenset(
    {
        "http.method",
        "http.request.method",
        "http.route",
        "http.status_code",
        "http.response.status_code",
        "http.scheme",
        "url.scheme",
        "rpc.system",
        "rpc.service",
        "rpc.method",
        "rpc.grpc.status_code",
        "db.system",
        "db.system.name",
        "db.name",
        "db.namespace",
        "db.operation",
        "db.operation.name",
        "db.mongodb.collection",
        "db.collection.name",
        "messaging.system",
        "messaging.operation",
        "messaging.operation.type",
        "messaging.destination.name",
        "messaging.consumer.group.name",
        "messaging.message.id",
        "error.type",
    }
)
# Where work enters a process: the only spans that may start a trace.
ENTRY_KINDS = frozenset({SpanKind.SERVER, SpanKind.CONSUMER})
EXPORT_DELAY_MS = 1000

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()


class EntryPoints(Sampler):
    """Samples a trace started by a request served or an event consumed, `ratio` of them by
    trace id (as TraceIdRatioBased: every process decides alike for one trace id). A database
    call or a publish with no span above it (an outbox sweep, a health check's ping, a lease
    renewed) starts none: every second of an idle stack would otherwise be a trace."""

    def __init__(self, ratio: float = 1.0) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def sampled(self, trace_id: int) -> bool:
        return trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._ratio.bound

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if kind in ENTRY_KINDS and self.sampled(trace_id):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "EntryPoints"


_entry_points = EntryPoints()


class EntryTraceIds(RandomIdGenerator):
    """Trace ids as the SDK draws them, but for a request's root span: its id was drawn where
    the request entered (`entered`), so that whether it is kept was decided once, before any
    instrumentation was paid for."""

    def generate_trace_id(self) -> int:
        entry = entry_trace.get()
        return entry[0] if entry is not None else super().generate_trace_id()


_ids = EntryTraceIds()


def entered(traceparent: str | None) -> bool:
    """Whether a request entering this process with this traceparent (or none) is traced: as
    its caller says, else as the sampler decides for a trace id drawn now, which its span (or,
    not kept, its logs and callees) will carry. To be called in the context that serves the
    request. An instrumentation paid for on every request, kept or not, was most of what
    tracing cost (docs/observability.md): a request not kept goes around it."""
    if _provider is None:
        return False
    if traceparent and (parsed := parse_traceparent(traceparent)):
        return parsed[1]
    trace_id = RandomIdGenerator.generate_trace_id(_ids)
    keep = _entry_points.sampled(trace_id)
    entry_trace.set((trace_id, keep))
    return keep


def traced_by_caller(details: Any) -> bool:
    """A gRPC call is traced here unless its caller's traceparent says the trace is not kept
    (one with none is a root: the sampler decides)."""
    for key, value in details.invocation_metadata or ():
        if key == "traceparent":
            parsed = parse_traceparent(value)
            return parsed is None or parsed[1]
    return True


def safe_span(span: ReadableSpan) -> ReadableSpan:
    """The span with only SAFE_ATTRIBUTES, no events (an exception's message, a stack) and a
    status without its description (a peer's error detail)."""
    attributes = {k: v for k, v in (span.attributes or {}).items() if k in SAFE_ATTRIBUTES}
    status = span.status
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        links=[Link(link.context) for link in span.links],
        kind=span.kind,
        status=Status(status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class SafeSpans(SpanExporter):
    """Hands its exporter every span through `safe_span`."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._exporter.export([safe_span(span) for span in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One span as a line of the trace file."""
    parent = span.parent
    return {
        "trace_id": trace.format_trace_id(span.context.trace_id) if span.context else "",
        "span_id": trace.format_span_id(span.context.span_id) if span.context else "",
        "parent_span_id": trace.format_span_id(parent.span_id) if parent else "",
        "name": span.name,
        "service": span.resource.attributes.get("service.name", ""),
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": trace.format_trace_id(link.context.trace_id),
                "span_id": trace.format_span_id(link.context.span_id),
            }
            for link in span.links
        ],
    }


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file as one JSON line. Every process of a local stack appends to
    the same file: each batch is one write to a file opened with O_APPEND, so lines of two
    processes never interleave."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(span), default=str) + "\n" for span in spans)
        with self._lock:
            os.write(self._fd, lines.encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            os.close(self._fd)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def traces_url(endpoint: str) -> str:
    """DMP_OTLP_ENDPOINT is the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def configure(service: str, otlp_endpoint: str, trace_file: str, ratio: float = 1.0) -> None:
    """Sets up this process's tracing, once, before any client or server is made."""
    global _provider, _tracer, _entry_points
    if _provider is not None or not (otlp_endpoint or trace_file):
        return
    _entry_points = EntryPoints(ratio)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "dmp"}),
        sampler=ParentBased(root=_entry_points),
        id_generator=_ids,
    )
    if otlp_endpoint:
        # Imported here: a process that does not trace does not load it (a tenth of a second).
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        provider.add_span_processor(
            BatchSpanProcessor(SafeSpans(OTLPSpanExporter(endpoint=traces_url(otlp_endpoint))))
        )
    if trace_file:
        provider.add_span_processor(
            BatchSpanProcessor(
                SafeSpans(JsonLinesExporter(trace_file)), schedule_delay_millis=EXPORT_DELAY_MS
            )
        )
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("dmp_kit")


def enabled() -> bool:
    return _provider is not None


def provider() -> TracerProvider | None:
    return _provider


def shutdown() -> None:
    """Exports what is left; at the end of the process."""
    if _provider is not None:
        _provider.shutdown()


def server_interceptors() -> list[Any]:
    """A server span for each call served (not health checks: probes every few seconds),
    continuing the caller's trace. First of the server's interceptors, so that the request
    context and the logs see its span.

    The caller's side has no span of its own: the `traceparent` the kit already sends with
    every call (dmp_kit.rpc.client.call_options) names the caller's current span, which the
    served span continues. The instrumentation's client interceptors would add a span per
    call that says little more (the time on the wire), and they put every call of a channel on
    grpc.aio's intercepted path: measured, the two sides' interceptors cost a call about
    0.3 ms of CPU, a tenth of a consult's for its two calls alone (docs/observability.md)."""
    if _provider is None:
        return []
    # Imported here: a process that does not trace does not load it.
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    not_traced = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
    interceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=_provider,
        # A call whose trace is not kept goes around the instrumentation: paying for a span
        # not recorded cost each call served more than the RPC metrics do.
        filter_=filters.all_of(filters.negate(not_traced), traced_by_caller),
    )
    return [interceptor]


def mongo_listeners() -> list[Any]:
    """A client span for each database command, named by the command: never its body, whose
    filters hold patients' identifiers (capture_statement off; SAFE_ATTRIBUTES drops it too)."""
    if _provider is None:
        return []
    tracer = _provider.get_tracer("dmp_kit.mongo")
    return [MongoCommandSpans(tracer, request_hook=name_command, capture_statement=False)]


class MongoCommandSpans(CommandTracer):
    """The instrumentation's listener, for commands sent inside a trace only: a command with
    no span above it (an outbox sweep, a health ping, the audit log's batched append) would
    make no span anyway (EntryPoints), but would still pay for the sampler's decision."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if trace.get_current_span().is_recording():
            super().started(event)


def name_command(span: trace.Span, event: monitoring.CommandStartedEvent) -> None:
    """`find dossier.documents` rather than the instrumentation's `dossier.find`: the command
    and the collection it reads, as OpenTelemetry's database conventions name a span."""
    collection = event.command.get(event.command_name)
    if isinstance(collection, str) and span.is_recording():
        span.update_name(f"{event.command_name} {event.database_name}.{collection}")


def _envelope_context(event: envelope_pb2.Envelope) -> Context | None:
    """The context of the span that made the event, from its envelope: not kept if the request
    that made it did not keep its trace, else as the sampler decides by trace id (which is how
    every process decides alike for one trace)."""
    if not event.HasField("trace"):
        return None
    try:
        trace_id = int(event.trace.trace_id, 16)
        span = SpanContext(
            trace_id=trace_id,
            span_id=int(event.trace.span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(
                TraceFlags.SAMPLED
                if not event.trace.not_kept and _entry_points.sampled(trace_id)
                else TraceFlags.DEFAULT
            ),
        )
    except ValueError:
        return None
    if not span.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span))


def _event_context(
    event: envelope_pb2.Envelope | None, headers: Mapping[str, str] | None
) -> Context | None:
    if headers and "traceparent" in headers:
        context = propagate.extract(headers)
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    return _envelope_context(event) if event is not None else None


def _messaging(subject: str, operation: str) -> dict[str, str]:
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
    }


def _kept(context: Context | None) -> bool:
    """Whether work under this context is recorded: a context from an event or a current span
    that is not kept costs no span (a None context: a root, the sampler decides)."""
    if context is None:
        return True
    return bool(trace.get_current_span(context).get_span_context().trace_flags.sampled)


@contextmanager
def publishing(subject: str, data: bytes) -> Iterator[dict[str, str]]:
    """A producer span for one publish, child of the span that made the event (the relay
    publishes long after the request ended); yields the headers that carry it to consumers.
    An event of a trace not kept is published bare: its consumers decide from its envelope,
    by the same trace id, alike."""
    parent = None
    current = trace.get_current_span().get_span_context()
    if _provider is not None and not current.is_valid:
        try:
            parent = _envelope_context(envelope_pb2.Envelope.FromString(data))
        except Exception:  # not an envelope: a publish of no trace
            parent = None
    sampled = current.trace_flags.sampled if current.is_valid else _kept(parent)
    if _provider is None or not sampled:
        yield {}
        return
    with _tracer.start_as_current_span(
        f"publish {subject}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=_messaging(subject, "publish"),
    ):
        headers: dict[str, str] = {}
        propagate.inject(headers)
        yield headers


def _processing(
    start: Callable[..., Any], subject: str, context: Context | None, durable: str, message_id: str
) -> Any:
    """A consumer span started by `start` (as current, or not), as OpenTelemetry's messaging
    conventions name it."""
    return start(
        f"process {subject}",
        context=context,
        kind=SpanKind.CONSUMER,
        attributes={
            **_messaging(subject, "process"),
            "messaging.consumer.group.name": durable,
            "messaging.message.id": message_id,
        },
    )


@contextmanager
def consuming(
    durable: str,
    subject: str,
    event: envelope_pb2.Envelope,
    headers: Mapping[str, str] | None,
) -> Iterator[None]:
    """A consumer span for one event handled, current while its effect runs (its database
    calls and the events it makes belong to the trace that made the event). An event whose
    trace is not kept gets no span: its trace's ids only, for its logs and its callees."""
    if _provider is None:
        yield
        return
    context = _event_context(event, headers)
    with contextlib.ExitStack() as scope:
        if _kept(context):
            started = _processing(
                _tracer.start_as_current_span, subject, context, durable, event.id
            )
            ids = scope.enter_context(started).get_span_context()
            span_id = request_id = trace.format_span_id(ids.span_id)
        else:  # no span: the trace's ids only, for the logs and the callees
            ids = trace.get_current_span(context).get_span_context()
            span_id, request_id = secrets.token_hex(8), event.id
        token = current_trace.set(
            Trace(
                request_id=event.trace.request_id or request_id,
                trace_id=trace.format_trace_id(ids.trace_id),
                span_id=span_id,
                sampled=ids.trace_flags.sampled,
            )
        )
        try:
            yield
        finally:
            current_trace.reset(token)


@contextmanager
def consuming_batch(
    durable: str,
    messages: Sequence[tuple[str, envelope_pb2.Envelope | None, Mapping[str, str] | None]],
) -> Iterator[None]:
    """One consumer span per event of a batch handled at once (subject, event, headers): each
    in its own event's trace (those kept), all ending when the batch's effect is done."""
    if _provider is None:
        yield
        return
    spans = []
    for subject, event, headers in messages:
        context = _event_context(event, headers)
        if not _kept(context):
            continue
        message_id = event.id if event is not None else ""
        spans.append(_processing(_tracer.start_span, subject, context, durable, message_id))
    try:
        yield
    finally:
        for span in spans:
            span.end()
