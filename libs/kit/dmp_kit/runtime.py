"""The life of a service process: logging, clock, MongoDB, NATS, gRPC server, health, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import uvloop
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pymongo.asynchronous.database import AsyncDatabase

from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp_kit import logging as dmp_logging
from dmp_kit import tracing
from dmp_kit.auth import JwksCache, TokenVerifier
from dmp_kit.bus import BUS_ACCESS, EventBus
from dmp_kit.clock import Clock, clock_from_path
from dmp_kit.config import Settings
from dmp_kit.forget import forgetting
from dmp_kit.metrics import DEPENDENCY_UP, serve_metrics
from dmp_kit.mongo import (
    CommandCounter,
    Document,
    Store,
    close_mongo,
    document_locks,
    mongo_client,
    ping,
)
from dmp_kit.outbox import OutboxRelay
from dmp_kit.probe import LIVENESS
from dmp_kit.rpc.client import MAX_MESSAGE_BYTES, call_options, open_channel
from dmp_kit.rpc.interceptors import (
    AuthInterceptor,
    ErrorInterceptor,
    RequestContextInterceptor,
    TextInterceptor,
)

log = dmp_logging.get_logger(__name__)

Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
HEALTH_INTERVAL_SECONDS = 1.0


def configure_logging(service: str, settings: Settings) -> None:
    dmp_logging.configure(service, settings.log_level, settings.key_bytes("log_pseudonym_key"))


def identity_jwks(channel: grpc.aio.Channel, timeout: float) -> JwksCache:
    """Keys fetched from identity's GetJwks (public method)."""
    stub = identity_pb2_grpc.IdentityServiceStub(channel)

    async def fetch() -> Iterable[Mapping[str, str]]:
        resp = await stub.GetJwks(identity_pb2.GetJwksRequest(), **call_options(timeout, token=""))
        return [
            {"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg} for k in resp.keys
        ]

    return JwksCache(fetch)


class ServiceRuntime:
    """What every service process has. Its `__main__` builds one, then calls `run`."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        configure_logging(name, settings)
        tracing.configure(
            name, settings.otlp_endpoint, settings.trace_file, settings.trace_sample_ratio
        )
        self.clock: Clock = clock_from_path(settings.clock_offset_file)
        counter = None
        if settings.mongo_ops_dir:
            counter = CommandCounter()
            counter.keep_in(Path(settings.mongo_ops_dir) / f"{name}.json")
        self.db: AsyncDatabase[Document] = mongo_client(
            settings.mongo_url, settings.mongo_timeout_ms, counter
        )[settings.database_name(name)]
        if settings.document_leases:
            document_locks.share(self.db["leases"])
        self.bus = EventBus(
            settings.nats_url,
            f"dmp-{name}",
            stream_replicas=settings.nats_stream_replicas,
            stream_max_age_days=settings.nats_stream_max_age_days,
            user=settings.nats_user,
            password=settings.nats_password.get_secret_value(),
            tls=settings.nats_tls(),
        )
        self.stop = asyncio.Event()
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = open_channel(address)
        return self._channels[address]

    def verifier_from_identity(self) -> TokenVerifier:
        keys = identity_jwks(
            self.channel(self.settings.identity_addr), self.settings.grpc_deadline_seconds
        )
        return self.verifier(keys)

    def verifier(self, keys: JwksCache) -> TokenVerifier:
        return TokenVerifier(
            keys,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            clock=self.clock,
        )

    async def serve(
        self,
        add_servicer: Callable[[Any, grpc.aio.Server], None],
        servicer: Any,
        service: ServiceDescriptor,
        **options: Any,
    ) -> None:
        """Serve one generated servicer: `add_XServicer_to_server`, the servicer, its descriptor."""
        await self.run(
            register=lambda server: add_servicer(servicer, server),
            service_names=[service.full_name],
            **options,
        )

    async def run(
        self,
        *,
        register: Callable[[grpc.aio.Server], None],
        service_names: Sequence[str],
        verifier: TokenVerifier,
        public_methods: frozenset[str] = frozenset(),
        stores: Sequence[Store] = (),
        relay: OutboxRelay | None = None,
        background: Sequence[Background] = (),
        on_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        server = grpc.aio.server(
            interceptors=[
                *tracing.server_interceptors(),
                RequestContextInterceptor(),
                ErrorInterceptor(),
                AuthInterceptor(verifier, public_methods),
                TextInterceptor(),
            ],
            options=[
                ("grpc.so_reuseport", 0),
                # Each connection is closed after a few minutes (its calls finished first), so
                # clients resolve the service's name again and find replicas added meanwhile.
                ("grpc.max_connection_age_ms", 300_000),
                ("grpc.max_connection_age_grace_ms", 30_000),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        register(server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        address = self.settings.listen_address(self.name)
        server.add_insecure_port(address)
        for names in ("", *service_names):
            await health_servicer.set(names, health_pb2.HealthCheckResponse.NOT_SERVING)
        # Liveness says only that the process and its event loop answer: a database away
        # makes a service unready, not a candidate for restart.
        await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        log.info("listening", address=address)
        serve_metrics(self.settings.metrics_address(self.name))

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)

        await self._prepare(stores, relay)
        if on_ready is not None:
            await on_ready()
        tasks = [
            asyncio.create_task(self._health_loop(health_servicer, service_names)),
            asyncio.create_task(forgetting(self.stop, self.settings.patient_data_held_seconds)),
        ]
        if relay is not None:
            tasks.append(asyncio.create_task(relay.run(self.stop)))
        tasks += [asyncio.create_task(self._supervised(job)) for job in background]
        log.info("ready")

        await self.stop.wait()
        log.info("stopping")
        await health_servicer.enter_graceful_shutdown()
        await server.stop(self.settings.shutdown_grace_seconds)
        for task in tasks:
            task.cancel()
        # Python 3.11's wait_for can swallow a cancellation that lands as its inner call
        # completes (gh-86296): every loop here also ends on `stop`, and none may hold the
        # shutdown beyond the grace period.
        _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
        if pending:
            log.warning("background_tasks_not_stopped", count=len(pending))
        await self.bus.close()
        for channel in self._channels.values():
            await channel.close()
        for store in stores:  # writes held back to go together, sent before the client closes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(store.settle(), self.settings.shutdown_grace_seconds)
        await close_mongo()
        tracing.shutdown()
        log.info("stopped")

    async def _supervised(self, job: Background) -> None:
        """Runs a background job until stop; if it fails, logs and starts it again."""
        while not self.stop.is_set():
            try:
                await job(self.stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a consumer losing NATS, a database away: start again
                log.warning(
                    "background_job_restarting",
                    job=getattr(job, "__name__", "?"),
                    error=type(exc).__name__,
                )
                await asyncio.sleep(1.0)

    async def _prepare(self, stores: Sequence[Store], relay: OutboxRelay | None) -> None:
        """Connect NATS and create indexes, retrying while a dependency is not up yet."""
        while not self.stop.is_set():
            try:
                if not self.bus.connected:
                    await self.bus.connect()
                await self.bus.ensure_streams(BUS_ACCESS[self.name].owns_streams)
                for store in stores:
                    await store.ensure_indexes()
                if relay is not None:
                    await relay.ensure_indexes()
                return
            except Exception as exc:  # whatever the dependency raises: wait and retry
                log.warning("dependencies_not_ready", error=type(exc).__name__, detail=str(exc))
                await asyncio.sleep(1.0)

    async def _health_loop(
        self, servicer: health.aio.HealthServicer, service_names: Sequence[str]
    ) -> None:
        """SERVING only while MongoDB answers and NATS is connected."""
        last: int | None = None
        while not self.stop.is_set():
            nats_ok = await self.bus.healthy()
            mongo_ok = await ping(self.db)
            DEPENDENCY_UP.labels("nats").set(nats_ok)
            DEPENDENCY_UP.labels("mongodb").set(mongo_ok)
            ok = nats_ok and mongo_ok
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            if status != last:
                for names in ("", *service_names):
                    await servicer.set(names, status)
                log.info("health", serving=ok)
                last = status
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)


# The cyclic garbage collector's generation thresholds for a serving process (Python's own:
# 700, 10, 10). A list of 200 documents allocates thousands of containers, nearly all freed
# by reference counting, yet each 700 set off a collection: measured per list of 50 through
# the gateway (each process's main thread, from /proc, twice each way), the dossier service
# spent 5.11 and 5.33 ms with Python's thresholds, 4.91 and 4.74 with these; consent 2.03 and
# 2.13, 1.97 and 1.95 (the gateway, unchanged then, 2.13 and 2.20 against 2.10 and 2.07).
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Before serving: what the process built to start (modules, settings, clients) is kept
    out of every collection from now on (`gc.freeze`), and the young generation is collected
    every GC_THRESHOLDS[0] allocations rather than every 700."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Runs a service's main coroutine to its end on uvloop, the event loop written on libuv:
    a gRPC call costs client and server about a fifth less CPU than on asyncio's own loop
    (measured on this machine), and every request crosses several."""
    tune_gc()
    uvloop.run(main)
