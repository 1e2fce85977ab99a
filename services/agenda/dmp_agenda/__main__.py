"""Starts the agenda service."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

from dmp.agenda.v1 import agenda_pb2, agenda_pb2_grpc
from dmp.events.v1 import envelope_pb2
from dmp_agenda.api import AgendaServicer, BirthDates, Downstream, People
from dmp_agenda.config import AgendaSettings
from dmp_agenda.domain import PreventionRules
from dmp_agenda.schedule import Schedule, on_document_added, on_dossier_event
from dmp_agenda.store import AgendaStore
from dmp_kit.bus import run_consumer
from dmp_kit.outbox import OutboxRelay
from dmp_kit.runtime import ServiceRuntime, run_service
from dmp_kit.service_auth import ServiceTokens, identity_exchange


def load_rules(settings: AgendaSettings) -> PreventionRules:
    if settings.prevention_rules_file:
        text = Path(settings.prevention_rules_file).read_text(encoding="utf-8")
    else:
        text = (resources.files("dmp_agenda") / "data" / "prevention.toml").read_text("utf-8")
    return PreventionRules.parse(text)


async def serve() -> None:
    settings = AgendaSettings()
    runtime = ServiceRuntime("agenda", settings)
    rules = load_rules(settings)
    store = AgendaStore(runtime.db)
    relay = OutboxRelay(runtime.bus, [store.appointments, store.patients])
    downstream = Downstream(settings, runtime.channel)
    tokens = ServiceTokens(
        "agenda",
        settings.key_bytes("service_account_key"),
        settings.jwt_issuer,
        identity_exchange(downstream.identity, settings.grpc_deadline_seconds),
        runtime.clock,
    )
    people = People(store, BirthDates(downstream, tokens), runtime.clock)
    servicer = AgendaServicer(
        settings, store, rules, runtime.clock, relay, runtime.bus, downstream, people
    )
    schedule = Schedule(
        store, rules, relay, runtime.clock, interval=settings.schedule_interval_seconds
    )

    async def dossier_lifecycle(stop: asyncio.Event) -> None:
        async def handle(event: envelope_pb2.Envelope) -> None:
            await on_dossier_event(store, people, runtime.clock, event)

        await run_consumer(
            runtime.bus,
            stream="DOSSIER",
            durable="agenda-dossier-lifecycle",
            subject="dossier.>",
            handler=handle,
            stop=stop,
        )

    async def documents(stop: asyncio.Event) -> None:
        async def handle(event: envelope_pb2.Envelope) -> None:
            await on_document_added(store, rules, relay, event)

        await run_consumer(
            runtime.bus,
            stream="DOSSIER",
            durable="agenda-document-added",
            subject="document.added",
            handler=handle,
            stop=stop,
        )

    await runtime.serve(
        agenda_pb2_grpc.add_AgendaServiceServicer_to_server,
        servicer,
        agenda_pb2.DESCRIPTOR.services_by_name["AgendaService"],
        verifier=runtime.verifier_from_identity(),
        stores=[store],
        relay=relay,
        background=[dossier_lifecycle, documents, schedule.run],
    )


def main() -> None:
    run_service(serve())


if __name__ == "__main__":
    main()
