"""Client side: channels, and per-call options that carry the token, trace and a deadline."""

from __future__ import annotations

from typing import Any

import grpc

from dmp_kit.context import current_token, current_trace, remaining_seconds

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def open_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=_OPTIONS)


def call_options(default_timeout: float, token: str | None = None) -> dict[str, Any]:
    """Metadata and timeout for a downstream call.

    The token is the one given (a service's own) or else the current caller's, forwarded;
    the timeout never exceeds what our own caller still waits.
    """
    metadata: list[tuple[str, str]] = []
    bearer = token if token is not None else current_token.get()
    if bearer:
        metadata.append(("authorization", f"Bearer {bearer}"))
    trace = current_trace.get()
    if trace is not None:
        metadata.append(("x-request-id", trace.request_id))
        metadata.append(("traceparent", trace.traceparent))
    return {"metadata": tuple(metadata), "timeout": remaining_seconds(default_timeout)}
