"""The dossier's events: dossier.*, document.*, access.first, and its audit records."""

from __future__ import annotations

from google.protobuf.message import Message

from dmp.events.v1 import envelope_pb2
from dmp_kit.auth import Principal
from dmp_kit.clock import Clock
from dmp_kit.events import actor_of, audit_event, new_event


class DossierEvents:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def fact(
        self, event_type: str, payload: Message, caller: Principal | None, ins: str
    ) -> envelope_pb2.Envelope:
        return new_event(
            event_type,
            payload,
            source="dossier",
            clock=self.clock,
            actor=actor_of(caller) if caller else None,
            patient_ins=ins,
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
