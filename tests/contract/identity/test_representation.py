"""identity alone, on its NATS, as the producer of `identity.representation.*`: a minor close to
their majority is announced once, one whose 18th birthday is today ends once, with its trace;
one far from it is untouched. The events carry INS and a date, never a name."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dmp.events.v1 import envelope_pb2
from dmp.identity.v1 import identity_pb2 as pb
from dmp.identity.v1 import identity_pb2_grpc
from dmp_kit.bus import EventBus
from dmp_stack.contract import Alone, alone
from dmp_stack.testing import Infra, collect_events, kept_logs, make_ins

SERVICE = "identity"
TODAY = datetime.now(ZoneInfo("Europe/Paris")).date()


@pytest.fixture(scope="module")
def alone_service(infra: Infra) -> Iterator[Alone]:
    """identity alone, its schedule run every half second (as on the test stack)."""
    before = os.environ.get("DMP_SCHEDULE_INTERVAL_SECONDS")
    os.environ["DMP_SCHEDULE_INTERVAL_SECONDS"] = "0.5"
    try:
        with alone(SERVICE, infra.mongo.url, kept_logs()) as service:
            asyncio.run(audit_stream(service))
            yield service
    finally:
        if before is None:
            os.environ.pop("DMP_SCHEDULE_INTERVAL_SECONDS", None)
        else:
            os.environ["DMP_SCHEDULE_INTERVAL_SECONDS"] = before


async def audit_stream(service: Alone) -> None:
    """The stream of traces, which audit creates on the platform."""
    bus = EventBus(service.nats_url, "contract-audit")
    await bus.connect()
    await bus.ensure_streams(["AUDIT"])
    await bus.close()


def register(alone: Alone, birth_date: str, representatives: list[str]) -> str:
    stub = identity_pb2_grpc.IdentityServiceStub(alone.channel)
    ins = make_ins()
    stub.RegisterPatient(
        pb.RegisterPatientRequest(
            ins=ins,
            vitale_serial="12345678",
            given_name="Léo",
            family_name="Bientôt",
            birth_date=birth_date,
            email=f"p-{ins}@example.org",
            legal_representatives=representatives,
        ),
        metadata=(("authorization", f"Bearer {alone.token('admin')}"),),
        timeout=5,
    )
    return ins


def born(days_to_majority: int) -> str:
    majority = TODAY + timedelta(days=days_to_majority)
    if (majority.month, majority.day) == (2, 29):
        majority += timedelta(days=1)
    return majority.replace(year=majority.year - 18).isoformat()


def read(alone: Alone, subject: str, done: Any) -> list[envelope_pb2.Envelope]:
    stream = subject.split(".")[0].upper()
    return asyncio.run(collect_events(alone.nats_url, stream, subject, done))


def test_the_notice_and_the_end_are_published_once(alone_service: Alone) -> None:
    parents = [register(alone_service, "1985-06-01", []) for _ in range(2)]
    soon = register(alone_service, born(29), parents)
    today = register(alone_service, born(0), parents[:1])
    far = register(alone_service, born(400), parents[1:])

    events = read(
        alone_service,
        "identity.representation.>",
        lambda seen: {(e.patient_ins, e.type) for e in seen}
        >= {
            (soon, "identity.representation.ending"),
            (today, "identity.representation.ended"),
        },
    )
    [ending] = [e for e in events if e.patient_ins == soon]
    assert ending.type == "identity.representation.ending" and ending.source == "identity"
    assert sorted(ending.representation_ending.legal_representatives) == sorted(parents)
    assert ending.representation_ending.majority_date == (TODAY + timedelta(days=29)).isoformat()
    [ended] = [e for e in events if e.patient_ins == today]
    assert list(ended.representation_ended.legal_representatives) == parents[:1]
    assert ended.representation_ended.majority_date == TODAY.isoformat()
    assert not [e for e in events if e.patient_ins == far]
    assert "Léo" not in str(events) and "Bientôt" not in str(events)

    traces = read(
        alone_service,
        "audit.identity",
        lambda seen: any(e.patient_ins == today for e in seen),
    )
    [trace] = [e for e in traces if e.patient_ins == today]
    assert trace.audit_record.query == "representation:ended"
    assert trace.audit_record.action == "update"

    # The schedule keeps running: nothing more is published (exactly once).
    asyncio.run(asyncio.sleep(2))
    again = read(alone_service, "identity.representation.>", lambda seen: len(seen) >= len(events))
    assert len(again) == len(events)
