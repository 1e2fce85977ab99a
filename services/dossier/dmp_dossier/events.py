"""The dossier's events: dossier.*, document.*, access.first, and its audit records; and what
it consumes: the end of a minor's legal representation, from identity."""

from __future__ import annotations

import asyncio
from functools import partial

from google.protobuf.message import Message

from dmp.events.v1 import envelope_pb2
from dmp_dossier.store import DossierStore
from dmp_kit.auth import Principal
from dmp_kit.bus import EventBus, run_consumer
from dmp_kit.clock import Clock
from dmp_kit.events import actor_of, audit_event, new_event


class DossierEvents:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def fact(
        self,
        event_type: str,
        payload: Message,
        caller: Principal | None,
        ins: str,
        event_id: str = "",
    ) -> envelope_pb2.Envelope:
        return new_event(
            event_type,
            payload,
            source="dossier",
            clock=self.clock,
            actor=actor_of(caller) if caller else None,
            patient_ins=ins,
            event_id=event_id,
        )

    def audit(
        self,
        caller: Principal,
        ins: str,
        action: str,
        outcome: str = "success",
        mode: str = "normal",
        document_id: str = "",
        query: str = "",
        reason: str = "",
    ) -> envelope_pb2.Envelope:
        return audit_event(
            source="dossier",
            clock=self.clock,
            caller=caller,
            patient_ins=ins,
            action=action,
            outcome=outcome,
            mode=mode,
            document_id=document_id,
            query=query,
            reason=reason,
        )


async def on_representation_ended(store: DossierStore, event: envelope_pb2.Envelope) -> None:
    """identity.representation.ended: the dossier's copy of the minor's legal representatives
    loses those who no longer are (rule: a former representative is refused like anyone)."""
    if event.WhichOneof("payload") != "representation_ended" or not event.patient_ins:
        return
    former = frozenset(event.representation_ended.legal_representatives)
    await store.drop_representatives(event.patient_ins, former)


async def run_representation_consumer(
    bus: EventBus, store: DossierStore, stop: asyncio.Event
) -> None:
    await run_consumer(
        bus,
        stream="IDENTITY",
        durable="dossier-representation-ended",
        subject="identity.representation.ended",
        handler=partial(on_representation_ended, store),
        stop=stop,
    )
