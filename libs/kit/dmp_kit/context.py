"""Per-call context: request id, trace, caller, deadline — set by interceptors, read anywhere."""

from __future__ import annotations

import re
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass

from opentelemetry import trace

TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})")


@dataclass(frozen=True)
class Trace:
    request_id: str
    trace_id: str
    span_id: str
    # Whether the trace is recorded (tracing on and this trace sampled): callees follow.
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def new_trace(request_id: str | None = None, traceparent: str | None = None) -> Trace:
    """The ids of the current OpenTelemetry span when tracing is on and this call is traced
    (dmp_kit.tracing: its instrumentation has already continued the caller's trace); otherwise
    continues a W3C traceparent when one is given (kept or not, as its flags say), or the trace
    drawn where the request entered (`entry_trace`), or starts a trace."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        return Trace(
            request_id=(request_id or secrets.token_hex(8))[:64],
            trace_id=trace.format_trace_id(span.trace_id),
            span_id=trace.format_span_id(span.span_id),
            sampled=span.trace_flags.sampled,
        )
    trace_id, sampled = "", True
    if traceparent and (parsed := parse_traceparent(traceparent)):
        trace_id, sampled = trace.format_trace_id(parsed[0]), parsed[1]
    elif entry := entry_trace.get():
        trace_id, sampled = trace.format_trace_id(entry[0]), entry[1]
    return Trace(
        request_id=(request_id or secrets.token_hex(8))[:64],
        trace_id=trace_id or secrets.token_hex(16),
        span_id=secrets.token_hex(8),
        sampled=sampled,
    )


def parse_traceparent(traceparent: str) -> tuple[int, bool] | None:
    """A W3C traceparent's trace id and whether its caller keeps the trace; None if malformed."""
    match = TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or int(match[1], 16) == 0:
        return None
    return int(match[1], 16), bool(int(match[2], 16) & 1)


# The trace id drawn where a request entered this process with no traceparent, and whether it
# is kept (dmp_kit.tracing.SampledOnly): the id of its span when kept, of its logs when not.
entry_trace: ContextVar[tuple[int, bool] | None] = ContextVar("dmp_entry_trace", default=None)
current_trace: ContextVar[Trace | None] = ContextVar("dmp_trace", default=None)
# The bearer token of the current call, forwarded downstream when acting for the caller.
current_token: ContextVar[str | None] = ContextVar("dmp_token", default=None)
# Monotonic time by which the current call must have answered.
current_deadline: ContextVar[float | None] = ContextVar("dmp_deadline", default=None)


def remaining_seconds(default: float) -> float:
    """The timeout for a downstream call: the default, or less if our own caller waits less."""
    deadline = current_deadline.get()
    if deadline is None:
        return default
    return max(0.0, min(default, deadline - time.monotonic()))
