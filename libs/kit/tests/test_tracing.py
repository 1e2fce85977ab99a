"""What a span may carry out of a process, the trace file's lines, which spans start a trace,
the kit's trace ids being the span's, and what a database span says."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import SpanKind, Status, StatusCode, format_trace_id
from pymongo import AsyncMongoClient

from dmp_kit.context import entry_trace, new_trace
from dmp_kit.tracing import (
    EntryPoints,
    EntryTraceIds,
    JsonLinesExporter,
    MongoCommandSpans,
    SafeSpans,
    name_command,
    traced_by_caller,
    traces_url,
)
from dmp_stack.testing import Infra

INS = "184057512345678"


def provider_into(exporter: InMemorySpanExporter | JsonLinesExporter) -> TracerProvider:
    provider = TracerProvider(sampler=ParentBased(root=EntryPoints()))
    provider.add_span_processor(SimpleSpanProcessor(SafeSpans(exporter)))
    return provider


def test_a_span_leaves_with_its_safe_attributes_only() -> None:
    exported = InMemorySpanExporter()
    tracer = provider_into(exported).get_tracer("t")
    with tracer.start_as_current_span(
        "GET /v1/dossiers/{ins}/documents",
        kind=SpanKind.SERVER,
        attributes={
            "http.route": "/v1/dossiers/{ins}/documents",
            "http.request.method": "GET",
            "url.path": f"/v1/dossiers/{INS}/documents",
            "http.target": f"/v1/dossiers/{INS}/documents?x=1",
            "url.query": f"ins={INS}",
            "client.address": "203.0.113.7",
            "db.statement": f'find {{"ins": "{INS}"}}',
            "user_agent.original": "curl",
        },
    ) as span:
        span.record_exception(ValueError(f"no dossier {INS}"))
        span.set_status(Status(StatusCode.ERROR, f"dossier {INS} not found"))
    (span_out,) = exported.get_finished_spans()
    assert dict(span_out.attributes or {}) == {
        "http.route": "/v1/dossiers/{ins}/documents",
        "http.request.method": "GET",
    }
    assert not span_out.events
    assert span_out.status.status_code is StatusCode.ERROR
    assert INS not in repr(span_out.to_json())


def test_only_requests_served_and_events_consumed_start_a_trace() -> None:
    exported = InMemorySpanExporter()
    tracer = provider_into(exported).get_tracer("t")
    with tracer.start_as_current_span("find dossier.dossiers", kind=SpanKind.CLIENT):
        pass
    with tracer.start_as_current_span("publish audit.dossier", kind=SpanKind.PRODUCER):
        pass
    assert not exported.get_finished_spans()
    with (
        tracer.start_as_current_span("process document.added", kind=SpanKind.CONSUMER),
        tracer.start_as_current_span("find notify.x", kind=SpanKind.CLIENT),
    ):
        pass
    names = sorted(s.name for s in exported.get_finished_spans())
    assert names == ["find notify.x", "process document.added"]


def test_the_trace_file_holds_one_span_a_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    tracer = provider_into(JsonLinesExporter(str(path))).get_tracer("t")
    with (
        tracer.start_as_current_span("served", kind=SpanKind.SERVER) as outer,
        tracer.start_as_current_span("called", kind=SpanKind.CLIENT),
    ):
        pass
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    called, served = lines
    assert called["parent_span_id"] == served["span_id"]
    assert served["parent_span_id"] == ""
    assert served["trace_id"] == format_trace_id(outer.get_span_context().trace_id)
    assert {"name", "service", "kind", "start_ns", "end_ns", "status", "attributes"} <= set(served)


def test_the_kits_trace_is_the_current_spans() -> None:
    tracer = provider_into(InMemorySpanExporter()).get_tracer("t")
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    without = new_trace("r", given)
    assert without.trace_id == "0af7651916cd43dd8448eb211c80319c"
    with tracer.start_as_current_span("served", kind=SpanKind.SERVER) as span:
        ids = span.get_span_context()
        within = new_trace("r", given)
    assert within.trace_id == format_trace_id(ids.trace_id)
    assert within.span_id == f"{ids.span_id:016x}"


def test_the_collector_url_is_its_base_plus_the_traces_path() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


def test_a_ratio_samples_by_trace_id_alike_everywhere() -> None:
    tenth = EntryPoints(0.1)
    ids = range(1, 2**64, 2**64 // 10_000)
    kept = [i for i in ids if tenth.sampled(i)]
    assert 800 < len(kept) < 1200
    assert all(EntryPoints(0.1).sampled(i) for i in kept)
    assert all(EntryPoints(1.0).sampled(i) for i in ids)
    assert not any(EntryPoints(0.0).sampled(i) for i in ids)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_database_span_names_the_command_never_its_filter(infra: Infra) -> None:
    """Against the real server, the listener as configured (before the allow-list): the
    span of a `find` by INS holds the command and collection, never the INS; a command
    with no trace above it makes no span."""
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=EntryPoints()))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    listener = MongoCommandSpans(
        provider.get_tracer("t"), request_hook=name_command, capture_statement=False
    )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongo.url, tz_aware=True, event_listeners=[listener]
    )
    name = f"trace_test_{uuid.uuid4().hex[:10]}"
    try:
        documents = client[name]["documents"]
        await documents.insert_one({"ins": INS})  # no trace: no span
        with provider.get_tracer("t").start_as_current_span("served", kind=SpanKind.SERVER):
            assert await documents.find_one({"ins": INS}) is not None
        spans = exported.get_finished_spans()
        assert [s.name for s in spans] == [f"find {name}.documents", "served"]
        assert INS not in spans[0].to_json()
        assert spans[0].parent is not None
    finally:
        await client.drop_database(name)
        await client.close()


def test_a_callers_flags_say_whether_a_call_is_traced() -> None:
    """The gRPC side: a call goes around the instrumentation when its caller does not keep the
    trace; one with no traceparent (or a malformed one) is a root, for the sampler."""

    class Details:
        def __init__(self, *metadata: tuple[str, str]) -> None:
            self.invocation_metadata = metadata

    kept = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    dropped = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    assert traced_by_caller(Details(("traceparent", kept)))
    assert not traced_by_caller(Details(("x-request-id", "r"), ("traceparent", dropped)))
    assert traced_by_caller(Details())
    assert traced_by_caller(Details(("traceparent", "00-zz-b7ad6b7169203331-00")))


def test_a_trace_not_kept_keeps_its_ids_for_the_logs_and_callees() -> None:
    """Without a span, the kit's trace continues the caller's trace id and flags, so that the
    callees it calls know the trace is not kept, and its logs still carry the id."""
    dropped = new_trace("r", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
    assert dropped.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert not dropped.sampled
    assert dropped.traceparent.endswith("-00")
    assert new_trace("r", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").sampled
    # Drawn where the request entered, not kept: the same id, for its logs and callees.
    token = entry_trace.set((0x0AF7651916CD43DD8448EB211C80319D, False))
    try:
        drawn = new_trace("r")
    finally:
        entry_trace.reset(token)
    assert (drawn.trace_id, drawn.sampled) == ("0af7651916cd43dd8448eb211c80319d", False)


def test_a_root_span_takes_the_trace_id_drawn_where_the_request_entered() -> None:
    """The decision is taken once, on the id the span will carry (EntryTraceIds)."""
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=EntryPoints()), id_generator=EntryTraceIds())
    provider.add_span_processor(SimpleSpanProcessor(exported))
    token = entry_trace.set((0x1234, True))
    try:
        with provider.get_tracer("t").start_as_current_span("served", kind=SpanKind.SERVER):
            pass
    finally:
        entry_trace.reset(token)
    (span,) = exported.get_finished_spans()
    assert span.context is not None and span.context.trace_id == 0x1234
