"""Building event envelopes: UUIDv7 id, type, time, actor, patient, trace, typed payload."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime

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


def derived_event_id(at: datetime, key: str) -> str:
    """A UUIDv7 that is the same wherever it is made: its time `at`, its other bits from `key`.
    For an event that several replicas may decide at once (a scheduled purge): they publish the
    same id, and JetStream keeps one (its duplicate window), the consumers' claims the rest."""
    if at.tzinfo is None:  # as the database gives it back: UTC
        at = at.replace(tzinfo=UTC)
    millis = int(at.timestamp() * 1000) & ((1 << 48) - 1)
    rest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:10], "big")  # 80 bits
    value = (millis << 80) | (0x7 << 76) | ((rest >> 68) << 64) | (0b10 << 62)
    value |= rest & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def event_time(event_id: str) -> float:
    """The Unix time an event was made, from its UUIDv7 id (its first 48 bits: milliseconds):
    the inverse of `derived_event_id`'s time, and of uuid7's."""
    try:
        return (uuid.UUID(event_id).int >> 80) / 1000.0
    except ValueError:
        return time.time()


def new_event(
    event_type: str,
    payload: Message,
    *,
    source: str,
    clock: Clock,
    actor: envelope_pb2.Actor | None = None,
    patient_ins: str = "",
    event_id: str = "",
) -> envelope_pb2.Envelope:
    """`event_id`: one derived_event_id made; otherwise a new UUIDv7."""
    field = _PAYLOAD_FIELD.get(payload.DESCRIPTOR.full_name)
    if field is None:
        raise TypeError(f"{payload.DESCRIPTOR.full_name} is not an event payload")
    occurred = Timestamp()
    occurred.FromDatetime(clock.now())
    env = Envelope(
        id=event_id or str(uuid7()),
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
                trace_id=trace.trace_id,
                span_id=trace.span_id,
                request_id=trace.request_id,
                not_kept=not trace.sampled,
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
