"""Exports claimed by replicas, on the real database: one replica at a time builds an export
(the version guard), a build whose lease ran out is taken up by another and the first one's
progress is refused, an export tried too often is failed, a ready one is deleted after its
keeping time, and a purge removes every export of the dossier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp_dossier.config import DossierSettings
from dmp_dossier.export import ExportBuilder, Lost
from dmp_dossier.store import DossierStore
from dmp_kit.clock import ManualClock
from dmp_stack.testing import Infra, make_ins

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = DossierSettings(env="dev")


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[DossierStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    db = client[f"dossier_exports_{make_ins()}"]
    found = DossierStore(db)
    await found.ensure_indexes()
    yield found
    await client.drop_database(db.name)
    await client.close()


def replica(store: DossierStore, clock: ManualClock) -> ExportBuilder:
    """A builder as one replica holds it (the other services are not asked here)."""
    return ExportBuilder(SETTINGS, store, clock, None, None, None)  # type: ignore[arg-type]


async def asked(store: DossierStore, ins: str) -> str:
    export_id = f"export-{make_ins()}"
    assert await store.take_export_slot(ins, export_id)
    await store.insert_export(
        {
            "_id": export_id,
            "ins": ins,
            "status": "pending",
            "progress": 0,
            "created_at": T0,
            "attempt": 0,
        }
    )
    return export_id


async def test_one_replica_claims_an_export_and_another_takes_it_up_after_its_lease(
    store: DossierStore,
) -> None:
    clock = ManualClock(T0)
    first, second = replica(store, clock), replica(store, clock)
    ins = make_ins()
    export_id = await asked(store, ins)
    claims = await asyncio.gather(*(r.claim(export_id, clock.now()) for r in (first, second)))
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0]["attempt"] == 1
    winner, loser = (first, second) if claims[0] is not None else (second, first)
    assert await loser.claim(export_id, clock.now()) is None  # the lease holds
    # One export at a time for a patient.
    assert not await store.take_export_slot(ins, "another")

    await winner.progress(won[0], 40)
    clock.advance(timedelta(seconds=SETTINGS.export_lease_seconds + 1))
    taken = await loser.claim(export_id, clock.now())
    assert taken is not None and taken["attempt"] == 2 and taken["progress"] == 40
    with pytest.raises(Lost):  # the first replica's build stops at its next step
        await winner.progress(won[0], 60)
    await loser.progress(taken, 60)
    assert (await store.get_export(export_id) or {})["progress"] == 60


async def test_an_export_tried_too_often_fails_and_frees_the_patient(store: DossierStore) -> None:
    clock = ManualClock(T0)
    builder = replica(store, clock)
    ins = make_ins()
    export_id = await asked(store, ins)
    lease = timedelta(seconds=SETTINGS.export_lease_seconds + 1)
    for attempt in range(1, SETTINGS.export_attempts + 1):
        claimed = await builder.claim(export_id, clock.now())
        assert claimed is not None and claimed["attempt"] == attempt
        clock.advance(lease)  # the replica died mid-build
    assert await builder.claim(export_id, clock.now()) is None
    assert (await store.get_export(export_id) or {})["status"] == "failed"
    assert await store.export_slots.find_one({"_id": ins}) is None  # freed at once
    assert await store.take_export_slot(ins, "another")


async def test_a_ready_export_is_deleted_after_its_keeping_time_and_all_with_a_purge(
    store: DossierStore,
) -> None:
    clock = ManualClock(T0)
    builder = replica(store, clock)
    ins = make_ins()
    export_id = await asked(store, ins)
    claimed = await builder.claim(export_id, clock.now())
    assert claimed is not None
    await store.put_export_part(export_id, 1, 0, b"sealed")
    await builder.progress(claimed, 100, status="ready", expires_at=T0 + timedelta(days=7))
    await builder.expire(T0 + timedelta(days=6))
    assert await store.export_part(export_id, 1, 0) == b"sealed"
    await builder.expire(T0 + timedelta(days=7, seconds=1))
    assert await store.export_part(export_id, 1, 0) is None
    assert (await store.get_export(export_id) or {})["status"] == "expired"

    await store.purge(ins)
    assert await store.get_export(export_id) is None
    assert await store.export_slots.find_one({"_id": ins}) is None
