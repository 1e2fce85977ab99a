"""Client side: channels, and per-call options that carry the token, trace and a deadline."""

from __future__ import annotations

import json
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
    # A replica that died and came back is tried again within 5 s, not after gRPC's default
    # backoff (up to 120 s), during which every call went to the others.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


# Calls spread over every address of a service (or every address its DNS name resolves to),
# a new connection tried when one fails: a replica that dies takes only its in-flight calls.
_ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def channel_target(address: str) -> str:
    """gRPC's target for `address`: `host:port`, or several replicas' `ip:port` separated by
    commas (the local scaled stack), or any target gRPC knows (`dns:///name:port`)."""
    if "," in address:
        return "ipv4:" + ",".join(part.strip() for part in address.split(","))
    return address


def open_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        channel_target(address), options=[*_OPTIONS, ("grpc.service_config", _ROUND_ROBIN)]
    )


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
