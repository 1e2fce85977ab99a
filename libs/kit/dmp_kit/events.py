"""Building event envelopes: UUIDv7 id, type, time, actor, patient, trace, typed payload."""

from __future__ import annotations

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from uuid6 import uuid7

from dmp.events.v1 import audit_pb2, envelope_pb2
from dmp_kit.auth import Principal
from dmp_kit.clock import Clock
from dmp_kit.context import current_trace

Envelope = envelope_pb2.Envelope

_PAYLOAD_FIELD: dict[str, str] = {
    f.message_type.full_name: f.name
    for f in Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    if f.message_type is not None
}


def actor_of(principal: Principal) -> envelope_pb2.Actor:
    if principal.app:
        # An app the patient connected acts: the trace names the app (its client id), in the
        # patient's dossier; the patient is the dossier's INS.
        return envelope_pb2.Actor(kind="app", id=principal.app)
    return envelope_pb2.Actor(
        kind=principal.kind,
        id=principal.actor_id,
        profession=principal.profession,
        roles=sorted(principal.roles),
    )


def new_event(
    event_type: str,
    payload: Message,
    *,
    source: str,
    clock: Clock,
    actor: envelope_pb2.Actor | None = None,
    patient_ins: str = "",
) -> envelope_pb2.Envelope:
    field = _PAYLOAD_FIELD.get(payload.DESCRIPTOR.full_name)
    if field is None:
        raise TypeError(f"{payload.DESCRIPTOR.full_name} is not an event payload")
    occurred = Timestamp()
    occurred.FromDatetime(clock.now())
    env = Envelope(
        id=str(uuid7()),
        type=event_type,
        occurred_at=occurred,
        patient_ins=patient_ins,
        source=source,
    )
    if actor is not None:
        env.actor.CopyFrom(actor)
    trace = current_trace.get()
    if trace is not None:
        env.trace.CopyFrom(
            envelope_pb2.TraceContext(
                trace_id=trace.trace_id, span_id=trace.span_id, request_id=trace.request_id
            )
        )
    getattr(env, field).CopyFrom(payload)
    return env


def audit_event(
    *,
    source: str,
    clock: Clock,
    caller: Principal,
    patient_ins: str,
    action: str,
    outcome: str,
    mode: str = "normal",
    document_id: str = "",
    query: str = "",
    reason: str = "",
) -> envelope_pb2.Envelope:
    """One traced action (rule 10), in the audit log's fixed vocabulary, as `audit.<source>`."""
    return new_event(
        f"audit.{source}",
        audit_pb2.AuditRecord(
            action=action,
            outcome=outcome,
            mode=mode,
            document_id=document_id,
            query=query,
            reason=reason,
            actor_name=caller.app_name if caller.app else "",
        ),
        source=source,
        clock=clock,
        actor=actor_of(caller),
        patient_ins=patient_ins,
    )
