"""Starts the ingest service."""

from __future__ import annotations

import asyncio

from dmp.dossier.v1 import dossier_pb2_grpc
from dmp.identity.v1 import identity_pb2_grpc
from dmp.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from dmp_ingest.api import IngestServicer
from dmp_ingest.config import IngestSettings
from dmp_ingest.store import IngestStore
from dmp_ingest.work import Worker
from dmp_kit.runtime import ServiceRuntime, run_service
from dmp_kit.service_auth import ServiceTokens, identity_exchange


async def serve() -> None:
    settings = IngestSettings()
    runtime = ServiceRuntime("ingest", settings)
    store = IngestStore(runtime.db)
    identity = identity_pb2_grpc.IdentityServiceStub(runtime.channel(settings.identity_addr))

    exchange = identity_exchange(identity, settings.grpc_deadline_seconds)

    worker = Worker(
        settings,
        store,
        runtime.clock,
        dossier_pb2_grpc.DossierServiceStub(runtime.channel(settings.dossier_addr)),
        ServiceTokens(
            "ingest",
            settings.key_bytes("service_account_key"),
            settings.jwt_issuer,
            exchange,
            runtime.clock,
        ),
    )

    async def dossier_lifecycle(stop: asyncio.Event) -> None:
        await worker.run_dossier_consumer(runtime.bus, stop)

    await runtime.serve(
        ingest_pb2_grpc.add_IngestServiceServicer_to_server,
        IngestServicer(store, worker, runtime.clock),
        ingest_pb2.DESCRIPTOR.services_by_name["IngestService"],
        verifier=runtime.verifier_from_identity(),
        stores=[store],
        background=[dossier_lifecycle, worker.run_daily],
        on_ready=worker.resume,
    )


def main() -> None:
    run_service(serve())


if __name__ == "__main__":
    main()
