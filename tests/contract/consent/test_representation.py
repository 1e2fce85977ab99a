"""consent alone, on its NATS: a minor's legal representative manages the minor's consent until
identity's `identity.representation.ended` comes; from then on they are refused like any other
patient, and no `dossier.opened` naming them, delivered late, gives it back."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import grpc
from grpc import StatusCode as S

from dmp.consent.v1 import consent_pb2 as pb
from dmp.consent.v1 import consent_pb2_grpc
from dmp.events.v1 import dossier_pb2, envelope_pb2, identity_pb2
from dmp_kit.bus import EventBus
from dmp_kit.clock import ManualClock
from dmp_kit.events import new_event
from dmp_stack.contract import OTHER_INS, Alone
from dmp_stack.testing import make_ins

SERVICE = "consent"
MINOR_INS = make_ins()


def publish(alone: Alone, *events: envelope_pb2.Envelope) -> None:
    async def send() -> None:
        bus = EventBus(alone.nats_url, "contract-peer")
        await bus.connect()
        await bus.ensure_streams()
        for event in events:
            await bus.publish_event(event)
        await bus.close()

    asyncio.run(send())


def opened(at: datetime) -> envelope_pb2.Envelope:
    return new_event(
        "dossier.opened",
        dossier_pb2.DossierOpened(
            opened_by=MINOR_INS, opener_kind="patient", legal_representatives=[OTHER_INS]
        ),
        source="dossier",
        clock=ManualClock(at),
        patient_ins=MINOR_INS,
    )


def settings_as_representative(alone: Alone) -> S:
    stub = consent_pb2_grpc.ConsentServiceStub(alone.channel)
    token = (("authorization", f"Bearer {alone.token('other patient')}"),)
    try:
        stub.GetSettings(pb.GetSettingsRequest(ins=MINOR_INS), metadata=token, timeout=5)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return S.OK


def eventually(alone: Alone, want: S) -> S:
    deadline = time.monotonic() + 30
    while (got := settings_as_representative(alone)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def test_a_former_representative_is_refused_from_the_end_on(alone_service: Alone) -> None:
    at = datetime.now(UTC)
    publish(alone_service, opened(at))
    assert eventually(alone_service, S.OK) == S.OK, "a representative manages the minor's DMP"

    ended = new_event(
        "identity.representation.ended",
        identity_pb2.RepresentationEnded(
            legal_representatives=[OTHER_INS], majority_date=at.date().isoformat()
        ),
        source="identity",
        clock=ManualClock(at + timedelta(seconds=1)),
        patient_ins=MINOR_INS,
    )
    publish(alone_service, ended, ended)  # delivered twice: the same effect
    assert eventually(alone_service, S.PERMISSION_DENIED) == S.PERMISSION_DENIED

    # An opening that still names them, older or even stamped after the end (the dossier read
    # identity just before the end): it grants nothing back.
    publish(alone_service, opened(at - timedelta(seconds=1)), opened(at + timedelta(seconds=2)))
    time.sleep(1)
    assert settings_as_representative(alone_service) == S.PERMISSION_DENIED
