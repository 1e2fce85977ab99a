"""Starts the messaging service."""

from __future__ import annotations

import asyncio
from datetime import UTC

from dmp.events.v1 import envelope_pb2
from dmp.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from dmp_kit.bus import run_consumer
from dmp_kit.outbox import OutboxRelay
from dmp_kit.runtime import ServiceRuntime, run_service
from dmp_messaging.api import Downstream, MessagingServicer
from dmp_messaging.config import MessagingSettings
from dmp_messaging.store import MessagingStore


async def serve() -> None:
    settings = MessagingSettings()
    runtime = ServiceRuntime("messaging", settings)
    store = MessagingStore(runtime.db)
    relay = OutboxRelay(runtime.bus, [store.conversations])
    servicer = MessagingServicer(
        settings,
        store,
        runtime.clock,
        relay,
        runtime.bus,
        Downstream(settings, runtime.channel),
    )

    async def on_purged(event: envelope_pb2.Envelope) -> None:
        """A purged DMP space takes its conversations with it, key first."""
        if event.WhichOneof("payload") == "dossier_purged" and event.patient_ins:
            await store.purge(event.patient_ins, event.occurred_at.ToDatetime(tzinfo=UTC))

    async def purges(stop: asyncio.Event) -> None:
        await run_consumer(
            runtime.bus,
            stream="DOSSIER",
            durable="messaging-dossier-purged",
            subject="dossier.purged",
            handler=on_purged,
            stop=stop,
        )

    await runtime.serve(
        messaging_pb2_grpc.add_MessagingServiceServicer_to_server,
        servicer,
        messaging_pb2.DESCRIPTOR.services_by_name["MessagingService"],
        verifier=runtime.verifier_from_identity(),
        stores=[store],
        relay=relay,
        background=[purges],
    )


def main() -> None:
    run_service(serve())


if __name__ == "__main__":
    main()
