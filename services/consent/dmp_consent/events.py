"""Consent's events: consent.changed, consent.break_glass / consent.regulator_access; and
what it consumes: the dossier's lifecycle, to know which dossiers exist and are open, and the
end of a minor's legal representation at their majority (identity's)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from dmp.events.v1 import consent_pb2, envelope_pb2
from dmp_consent.domain import DossierStatus, Mode
from dmp_consent.store import ConsentStore
from dmp_kit.auth import Principal
from dmp_kit.clock import Clock
from dmp_kit.events import actor_of, new_event

CHANGED = "consent.changed"
EMERGENCY_SUBJECT = {
    Mode.BREAK_GLASS: "consent.break_glass",
    Mode.REGULATOR: "consent.regulator_access",
}
DOSSIER_STATUS_EVENTS = {
    "dossier.opened": DossierStatus.OPEN,
    "dossier.reopened": DossierStatus.OPEN,
    "dossier.closed": DossierStatus.CLOSED,
    "dossier.deletion_requested": DossierStatus.DELETION_REQUESTED,
    "dossier.purged": DossierStatus.ABSENT,
}


def consent_changed(
    clock: Clock, caller: Principal, ins: str, change: str, rpps: str = "", trusted_ins: str = ""
) -> envelope_pb2.Envelope:
    return new_event(
        CHANGED,
        consent_pb2.ConsentChanged(change=change, rpps=rpps, trusted_ins=trusted_ins),
        source="consent",
        clock=clock,
        actor=actor_of(caller),
        patient_ins=ins,
    )


def emergency_granted(
    clock: Clock,
    caller: Principal,
    ins: str,
    *,
    grant_id: str,
    mode: Mode,
    reason: str,
    expires_at: datetime,
    attending_physician: str,
) -> envelope_pb2.Envelope:
    expires = Timestamp()
    expires.FromDatetime(expires_at)
    return new_event(
        EMERGENCY_SUBJECT[mode],
        consent_pb2.EmergencyAccessGranted(
            grant_id=grant_id,
            rpps=caller.rpps,
            mode=mode.value,
            reason=reason,
            expires_at=expires,
            attending_physician_rpps=attending_physician,
        ),
        source="consent",
        clock=clock,
        actor=actor_of(caller),
        patient_ins=ins,
    )


async def on_dossier_event(store: ConsentStore, event: envelope_pb2.Envelope) -> None:
    """Keeps the replica of dossier statuses (idempotent; out-of-order safe)."""
    status = DOSSIER_STATUS_EVENTS.get(event.type)
    if status is None or not event.patient_ins:
        return
    opened = event.HasField("dossier_opened")
    reps = list(event.dossier_opened.legal_representatives) if opened else []
    await store.record_dossier_status(
        event.patient_ins, status, event.occurred_at.ToDatetime(tzinfo=UTC), reps
    )


async def on_representation_ended(store: ConsentStore, event: envelope_pb2.Envelope) -> None:
    """identity.representation.ended: the former representatives no longer act for the
    now-adult patient (idempotent; never undone by an older event)."""
    if event.WhichOneof("payload") != "representation_ended" or not event.patient_ins:
        return
    former = list(event.representation_ended.legal_representatives)
    await store.drop_representatives(event.patient_ins, former)
