"""Starts the consent service."""

from __future__ import annotations

import asyncio
from functools import partial
from importlib import resources
from pathlib import Path

from dmp.consent.v1 import consent_pb2, consent_pb2_grpc
from dmp.dossier.v1 import dossier_pb2_grpc
from dmp.events.v1 import envelope_pb2
from dmp.identity.v1 import identity_pb2_grpc
from dmp_consent.api import ConsentServicer
from dmp_consent.config import ConsentSettings
from dmp_consent.domain import HabilitationMatrix
from dmp_consent.dossier_client import DossierChangeMarks, dossier_lookup
from dmp_consent.events import on_dossier_event, on_representation_ended
from dmp_consent.identity_client import patient_lookup
from dmp_consent.store import ConsentStore
from dmp_kit.bus import run_consumer
from dmp_kit.catalogue import load_catalogue
from dmp_kit.outbox import OutboxRelay
from dmp_kit.runtime import ServiceRuntime, run_service
from dmp_kit.service_auth import ServiceTokens, identity_exchange


def load_matrix(settings: ConsentSettings, known_types: list[str]) -> HabilitationMatrix:
    if settings.habilitation_matrix_file:
        text = Path(settings.habilitation_matrix_file).read_text(encoding="utf-8")
    else:
        text = (resources.files("dmp_consent") / "data" / "habilitation.toml").read_text("utf-8")
    return HabilitationMatrix.parse(text, known_types)


async def serve() -> None:
    settings = ConsentSettings()
    runtime = ServiceRuntime("consent", settings)
    catalogue = load_catalogue(settings.catalogue_file)
    identity = identity_pb2_grpc.IdentityServiceStub(runtime.channel(settings.identity_addr))
    dossier = dossier_pb2_grpc.DossierServiceStub(runtime.channel(settings.dossier_addr))
    deadline = settings.grpc_deadline_seconds
    tokens = ServiceTokens(
        "consent",
        settings.key_bytes("service_account_key"),
        settings.jwt_issuer,
        identity_exchange(identity, deadline),
        runtime.clock,
    )
    store = ConsentStore(runtime.db, DossierChangeMarks(dossier, tokens, deadline))
    relay = OutboxRelay(runtime.bus, [store.consents])
    servicer = ConsentServicer(
        settings,
        store,
        load_matrix(settings, list(catalogue.types)),
        catalogue,
        runtime.clock,
        relay,
        identity,
        dossier_lookup(dossier, tokens, deadline),
        patient_lookup(identity, tokens, deadline),
    )

    async def dossier_lifecycle(stop: asyncio.Event) -> None:
        async def handle(event: envelope_pb2.Envelope) -> None:
            await on_dossier_event(store, event)

        await run_consumer(
            runtime.bus,
            stream="DOSSIER",
            durable="consent-dossier-lifecycle",
            subject="dossier.>",
            handler=handle,
            stop=stop,
        )

    async def representation_ended(stop: asyncio.Event) -> None:
        await run_consumer(
            runtime.bus,
            stream="IDENTITY",
            durable="consent-representation-ended",
            subject="identity.representation.ended",
            handler=partial(on_representation_ended, store),
            stop=stop,
        )

    await runtime.serve(
        consent_pb2_grpc.add_ConsentServiceServicer_to_server,
        servicer,
        consent_pb2.DESCRIPTOR.services_by_name["ConsentService"],
        verifier=runtime.verifier_from_identity(),
        stores=[store],
        relay=relay,
        background=[dossier_lifecycle, representation_ended],
    )


def main() -> None:
    run_service(serve())


if __name__ == "__main__":
    main()
