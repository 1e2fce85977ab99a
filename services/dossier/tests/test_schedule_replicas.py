"""Two replicas run the dossier's schedule on one database and one bus: a purge both decide
at once is announced once (its event id is the purge's, whoever publishes it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp_dossier.schedule import Schedule
from dmp_dossier.store import DossierStore
from dmp_kit.bus import EventBus
from dmp_kit.clock import ManualClock
from dmp_kit.outbox import OutboxRelay
from dmp_stack.testing import Infra, collect_events, make_ins

pytestmark = pytest.mark.asyncio(loop_scope="session")
NOW = datetime(2037, 3, 1, tzinfo=UTC)


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[DossierStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    db = client[f"dossier_schedule_{make_ins()}"]
    found = DossierStore(db)
    await found.ensure_indexes()
    yield found
    await client.drop_database(db.name)
    await client.close()


@pytest.fixture
async def bus(infra: Infra) -> AsyncIterator[EventBus]:
    bus = EventBus(infra.nats.url, "dossier-schedule-test")
    await bus.connect()
    await bus.ensure_streams(["DOSSIER"])
    yield bus
    await bus.close()


async def test_a_purge_two_replicas_decide_at_once_is_announced_once(
    store: DossierStore, bus: EventBus, infra: Infra
) -> None:
    ins = make_ins()
    await store.dossiers.insert_one(
        {"_id": ins, "status": "closed", "purge_after": NOW - timedelta(days=1), "_v": 1}
    )
    clock = ManualClock(NOW)
    replicas = [Schedule(store, bus, OutboxRelay(bus, []), clock, 60.0) for _ in range(2)]
    await asyncio.gather(*(replica.purge(NOW) for replica in replicas))
    assert await store.dossiers.find_one({"_id": ins}) is None

    events = await collect_events(
        infra.nats.url,
        "DOSSIER",
        "dossier.purged",
        lambda seen: any(e.patient_ins == ins for e in seen),
    )
    await asyncio.sleep(0.5)
    events = await collect_events(
        infra.nats.url,
        "DOSSIER",
        "dossier.purged",
        lambda seen: any(e.patient_ins == ins for e in seen),
    )
    assert [e.dossier_purged.cause for e in events if e.patient_ins == ins] == ["closed_10_years"]
