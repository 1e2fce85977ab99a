"""What every service tells Prometheus: its RPCs, its dependencies, its outbox and its consumers.

Each process serves its metrics on a port of its own (`DMP_METRICS_LISTEN`; by default its gRPC
port + 1000), at `/metrics`, with prometheus_client's server. Labels are bounded: a method, a
status code, a collection, a stream and durable — never a patient, document or professional.
The catalogue and what each metric tells an operator: docs/observability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Protocol

from nats.js.api import ConsumerInfo
from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from dmp_kit.logging import get_logger
from dmp_kit.periodic import beside

__all__ = ["ConsumerLag", "Counter", "Gauge", "Histogram", "serve_metrics"]

log = get_logger(__name__)

# No `_created` series beside each counter and histogram: they double what is scraped and tell
# nothing a restart (process_start_time_seconds) does not.
disable_created_metrics()  # type: ignore[no-untyped-call]

RPC_REQUESTS = Counter(
    "dmp_rpc_requests_total", "gRPC calls handled, by method and status code", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "dmp_rpc_request_duration_seconds",
    "Time to answer a gRPC call",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DEPENDENCY_UP = Gauge(
    "dmp_dependency_up", "1 while the dependency answers (mongodb, nats)", ["dependency"]
)
OUTBOX_PENDING = Gauge(
    "dmp_outbox_pending_documents",
    "Documents holding events not yet published",
    ["collection"],
)
OUTBOX_OLDEST = Gauge(
    "dmp_outbox_oldest_pending_age_seconds",
    "Age of the oldest event waiting in the outbox (0: none waits)",
    ["collection"],
)
OUTBOX_PUBLISHED = Counter(
    "dmp_outbox_published_events_total", "Events the outbox relay published", ["collection"]
)
CONSUMER_PENDING = Gauge(
    "dmp_jetstream_consumer_pending_messages",
    "Messages of the stream not yet delivered to the durable consumer (its lag)",
    ["stream", "durable"],
)
CONSUMER_ACK_PENDING = Gauge(
    "dmp_jetstream_consumer_ack_pending_messages",
    "Messages delivered to the durable consumer and not yet acknowledged",
    ["stream", "durable"],
)
CONSUMER_REDELIVERED = Gauge(
    "dmp_jetstream_consumer_redelivered_messages",
    "Messages of the durable consumer delivered more than once and not yet acknowledged",
    ["stream", "durable"],
)
EVENTS_HANDLED = Counter(
    "dmp_events_handled_total",
    "Events a consumer handled: ok, retry (redelivered later), dead_letter, rejected",
    ["durable", "outcome"],
)
DEAD_LETTERS = Counter(
    "dmp_dead_letters_total", "Events given up after their last attempt", ["durable"]
)

# How often a consumer asks JetStream for its lag: one small request per interval.
LAG_INTERVAL_SECONDS = 5.0


def serve_metrics(address: str) -> None:
    """Serves this process's metrics at `address` (host:port; "off": not served). A port
    already taken leaves the service running without them, and says so."""
    if address == "off":
        return
    host, _, port = address.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]") or "::")
    except OSError as exc:
        log.warning("metrics_not_served", address=address, error=type(exc).__name__)
        return
    log.info("metrics_listening", address=address)


class Consuming(Protocol):
    """What a consumer's lag is read from (dmp_kit.bus's Pull)."""

    async def consumer_info(self) -> ConsumerInfo: ...


class ConsumerLag:
    """Keeps a durable consumer's lag gauges, asking JetStream at most every few seconds, from
    a task of its own (`watch`): a handler that hangs would otherwise freeze the gauges at
    their last value while its lag grows — the failure they are there to show."""

    def __init__(self, stream: str, durable: str) -> None:
        self._labels = (stream, durable)
        self._next = 0.0

    async def sample(self, sub: Consuming) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + LAG_INTERVAL_SECONDS
        try:
            info = await sub.consumer_info()
        except Exception as exc:  # a metric is not worth failing the consumer for
            log.debug("consumer_lag_unknown", durable=self._labels[1], error=type(exc).__name__)
            return
        CONSUMER_PENDING.labels(*self._labels).set(info.num_pending or 0)
        CONSUMER_ACK_PENDING.labels(*self._labels).set(info.num_ack_pending or 0)
        CONSUMER_REDELIVERED.labels(*self._labels).set(info.num_redelivered or 0)

    async def watch(self, sub: Consuming, stop: asyncio.Event) -> None:
        """Samples every LAG_INTERVAL_SECONDS until `stop` is set."""
        while not stop.is_set():
            await self.sample(sub)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LAG_INTERVAL_SECONDS)

    @contextlib.asynccontextmanager
    async def watching(self, sub: Consuming, stop: asyncio.Event) -> AsyncIterator[None]:
        """`watch` running beside the consumer's loop for as long as the block lasts."""
        async with beside(self.watch(sub, stop)):
            yield
