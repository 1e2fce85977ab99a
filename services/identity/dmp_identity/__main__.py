"""Starts the identity service."""

from __future__ import annotations

import asyncio

from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp.notify.v1 import notify_pb2_grpc
from dmp_identity.api import PUBLIC_METHODS, IdentityServicer, KeyRing
from dmp_identity.config import IdentitySettings
from dmp_identity.schedule import Schedule
from dmp_identity.store import IdentityStore
from dmp_kit.auth import JwksCache
from dmp_kit.outbox import OutboxRelay
from dmp_kit.periodic import every
from dmp_kit.runtime import ServiceRuntime, run_service

PURGE_INTERVAL_SECONDS = 300


async def serve() -> None:
    settings = IdentitySettings()
    runtime = ServiceRuntime("identity", settings)
    store = IdentityStore(runtime.db)
    keys = KeyRing(store, settings.identity_key_bytes, runtime.clock)
    relay = OutboxRelay(runtime.bus, [store.throttles, store.accounts])
    servicer = IdentityServicer(
        settings,
        store,
        keys,
        runtime.clock,
        relay,
        notify_pb2_grpc.NotifyServiceStub(runtime.channel(settings.notify_addr)),
    )
    # Identity verifies tokens with its own keys, read from its own store.
    verifier = runtime.verifier(JwksCache(keys.fetch_public, min_refresh_interval=1.0))
    servicer.verifier = verifier  # an app's access token presented for revocation

    async def on_ready() -> None:
        await keys.ensure_key()
        await servicer.provision_service_clients()
        await servicer.bootstrap_admin()

    async def purge(stop: asyncio.Event) -> None:
        # Expired login challenges, codes, assertion ids and ended sessions' refresh tokens;
        # when the database is away, the next pass purges.
        await every(
            PURGE_INTERVAL_SECONDS,
            lambda: store.purge_expired(runtime.clock.now()),
            stop,
            event="purge_retry",
        )

    schedule = Schedule(
        store,
        relay,
        runtime.clock,
        notice_days=settings.representation_notice_days,
        interval=settings.schedule_interval_seconds,
    )

    await runtime.serve(
        identity_pb2_grpc.add_IdentityServiceServicer_to_server,
        servicer,
        identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
        verifier=verifier,
        public_methods=PUBLIC_METHODS,
        stores=[store],
        relay=relay,
        background=[purge, schedule.run],
        on_ready=on_ready,
    )


def main() -> None:
    run_service(serve())


if __name__ == "__main__":
    main()
