"""Starts the dossier service."""

from __future__ import annotations

import asyncio

from dmp.audit.v1 import audit_pb2_grpc
from dmp.consent.v1 import consent_pb2_grpc
from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp.identity.v1 import identity_pb2_grpc
from dmp.messaging.v1 import messaging_pb2_grpc
from dmp_dossier.api import DossierServicer
from dmp_dossier.config import DossierSettings
from dmp_dossier.events import run_representation_consumer
from dmp_dossier.export import ExportBuilder
from dmp_dossier.schedule import Schedule
from dmp_dossier.store import DossierStore
from dmp_kit.catalogue import load_catalogue
from dmp_kit.outbox import OutboxRelay
from dmp_kit.runtime import ServiceRuntime, run_service
from dmp_kit.service_auth import ServiceTokens, identity_exchange


async def serve() -> None:
    settings = DossierSettings()
    runtime = ServiceRuntime("dossier", settings)
    store = DossierStore(runtime.db, settings.remember_records)
    # (the listings are in `dossiers`, beside their dossier's record)
    relay = OutboxRelay(runtime.bus, [store.dossiers, store.measurements, store.exports])
    identity = identity_pb2_grpc.IdentityServiceStub(runtime.channel(settings.identity_addr))
    exports = ExportBuilder(
        settings,
        store,
        runtime.clock,
        ServiceTokens(
            "dossier",
            settings.key_bytes("service_account_key"),
            settings.jwt_issuer,
            identity_exchange(identity, settings.grpc_deadline_seconds),
            runtime.clock,
        ),
        messaging_pb2_grpc.MessagingServiceStub(runtime.channel(settings.messaging_addr)),
        audit_pb2_grpc.AuditServiceStub(runtime.channel(settings.audit_addr)),
    )
    servicer = DossierServicer(
        settings,
        store,
        load_catalogue(settings.catalogue_file),
        runtime.clock,
        relay,
        runtime.bus,
        consent_pb2_grpc.ConsentServiceStub(runtime.channel(settings.consent_addr)),
        identity,
        exports.kick,
    )
    schedule = Schedule(
        store, runtime.bus, relay, runtime.clock, settings.schedule_interval_seconds
    )

    async def representation_ended(stop: asyncio.Event) -> None:
        await run_representation_consumer(runtime.bus, store, stop)

    await runtime.serve(
        dossier_pb2_grpc.add_DossierServiceServicer_to_server,
        servicer,
        dossier_pb2.DESCRIPTOR.services_by_name["DossierService"],
        verifier=runtime.verifier_from_identity(),
        stores=[store],
        relay=relay,
        background=[schedule.run, representation_ended, exports.run],
    )


def main() -> None:
    run_service(serve())


if __name__ == "__main__":
    main()
