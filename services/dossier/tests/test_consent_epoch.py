"""The consent epoch in a dossier's record, on the real database: consent's marks give a new
epoch at each step, none while a change begun is under way (until it lapses), and no mark
creates a record or touches the dossier's own version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp_dossier.store import CONSENT_CHANGE_SECONDS, DossierStore, consent_epoch
from dmp_kit.outbox import VERSION
from dmp_stack.testing import Infra, make_ins

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
A, B = "a" * 32, "b" * 32


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[DossierStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    db = client[f"dossier_epoch_{make_ins()}"]
    yield DossierStore(db)
    await client.drop_database(db.name)
    await client.close()


async def test_an_epoch_stands_only_when_no_change_is_under_way(store: DossierStore) -> None:
    ins = make_ins()
    await store.insert_dossier({"_id": ins, "status": "open", VERSION: 3})
    record = await store.get_dossier(ins)
    assert consent_epoch(record, T0) == "", "never marked: no epoch"

    async def epoch(at: datetime) -> str:
        return consent_epoch(await store.get_dossier(ins), at)

    await store.mark_consent_change(ins, A, done=False, now=T0)
    assert await epoch(T0) == ""
    await store.mark_consent_change(ins, B, done=False, now=T0)  # two changes at once
    await store.mark_consent_change(ins, A, done=True, now=T0)
    assert await epoch(T0) == "", "B is still under way"
    await store.mark_consent_change(ins, B, done=True, now=T0)
    first = await epoch(T0)
    assert len(first) == 32
    await store.mark_consent_change(ins, A, done=False, now=T0)
    await store.mark_consent_change(ins, A, done=True, now=T0)
    assert await epoch(T0) not in ("", first), "each change gives a new epoch"
    # A change consent began and never ended holds the epoch back for a while only.
    await store.mark_consent_change(ins, B, done=False, now=T0)
    lapsed = T0 + timedelta(seconds=CONSENT_CHANGE_SECONDS + 1)
    assert await epoch(T0 + timedelta(seconds=1)) == ""
    assert len(await epoch(lapsed)) == 32
    assert (await store.get_dossier(ins) or {})[VERSION] == 3, "not a change of the dossier"


async def test_no_mark_creates_a_record(store: DossierStore) -> None:
    ins = make_ins()
    await store.mark_consent_change(ins, A, done=False, now=T0)
    await store.mark_consent_change(ins, A, done=True, now=T0)
    assert await store.get_dossier(ins) is None
    assert await store.dossiers.count_documents({"ins": ins}) == 0


async def test_a_lapsed_change_is_cleared_by_the_next_mark(store: DossierStore) -> None:
    ins = make_ins()
    await store.insert_dossier({"_id": ins, "status": "open"})
    await store.mark_consent_change(ins, A, done=False, now=T0)  # never said ended
    later = T0 + timedelta(seconds=CONSENT_CHANGE_SECONDS + 1)
    await store.mark_consent_change(ins, B, done=False, now=later)
    record = await store.get_dossier(ins) or {}
    assert set(record["consent_mark"]["changing"]) == {B}
    await store.mark_consent_change(ins, B, done=True, now=later)
    record = await store.get_dossier(ins) or {}
    assert record["consent_mark"]["changing"] == {} and consent_epoch(record, later)
