"""Notify's records of a patient on its real database: the channels they chose and the time of
their dossier's last purge share one record, read at once; purge times kept apart by an earlier
version are folded into it at start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from dmp_notify.store import NotifyStore
from dmp_stack.testing import Infra, make_ins

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DATABASE = "notify_store_test"


@pytest.fixture
async def client(infra: Infra) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    await client.drop_database(DATABASE)
    yield client
    await client.drop_database(DATABASE)
    await client.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_purge_and_the_channels_are_one_record_neither_erasing_the_other(
    client: AsyncMongoClient[dict[str, object]],
) -> None:
    store = NotifyStore(client[DATABASE])
    await store.ensure_indexes()
    ins = make_ins()
    patient = f"patient:{ins}"
    nobody = await store.recipient_state(patient)
    assert nobody.channels == {} and nobody.purged_at is None

    await store.put_preferences(patient, {"document_added": ["email"]})
    await store.forget_dossier(ins, T0)
    state = await store.recipient_state(patient)
    assert state.channels == {"document_added": ["email"]}
    assert state.purged_at == T0
    # a later choice of channels keeps the purge's time; an older purge replayed does not
    # move it back
    await store.put_preferences(patient, {"document_added": []})
    await store.forget_dossier(ins, T0 - timedelta(days=1))
    state = await store.recipient_state(patient)
    assert state.channels == {"document_added": []} and state.purged_at == T0
    assert await store.get_preferences(patient) == {"document_added": []}
    # a purge of someone who never chose anything: their record holds the time alone
    other = make_ins()
    await store.forget_dossier(other, T0)
    assert await store.get_preferences(f"patient:{other}") == {}
    assert (await store.recipient_state(f"patient:{other}")).purged_at == T0


@pytest.mark.asyncio(loop_scope="session")
async def test_purge_times_kept_apart_are_folded_in_once_at_start(
    client: AsyncMongoClient[dict[str, object]],
) -> None:
    db = client[DATABASE]
    chose, never = make_ins(), make_ins()
    # as an earlier version left them: one record per INS in `purges`
    await db["preferences"].insert_one(
        {"_id": f"patient:{chose}", "channels": {"login": ["email"]}, "purged_at": T0}
    )
    await db["purges"].insert_many(
        [{"_id": chose, "at": T0 + timedelta(hours=1)}, {"_id": never, "at": T0}]
    )
    store = NotifyStore(db)
    await store.ensure_indexes()
    assert await db["purges"].count_documents({}) == 0
    chose_state = await store.recipient_state(f"patient:{chose}")
    assert chose_state.channels == {"login": ["email"]}
    assert chose_state.purged_at == T0 + timedelta(hours=1)
    assert (await store.recipient_state(f"patient:{never}")).purged_at == T0
    # a second start (or a second replica) finds nothing left to fold
    assert await store.fold_purges() == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_a_purge_and_a_choice_of_channels_at_once_both_hold(
    client: AsyncMongoClient[dict[str, object]],
) -> None:
    """The API's choice and the consumer's purge, in one process at the same moment, on new
    records and on existing ones: FerretDB writes a whole record back for an update, so without
    the record's lock one of the two was lost (and the second upsert of a new record failed).
    The new choice holds the old one's values under other kinds: FerretDB 1.24 took a `$set`
    of it for no change."""
    store = NotifyStore(client[DATABASE])
    await store.ensure_indexes()
    people = [make_ins() for _ in range(40)]
    for ins in people[:20]:  # existing records for half of them
        await store.put_preferences(f"patient:{ins}", {"login": ["email"]})
    await asyncio.gather(
        *(
            change
            for ins in people
            for change in (
                store.put_preferences(f"patient:{ins}", {"document_added": ["email"]}),
                store.forget_dossier(ins, T0),
            )
        )
    )
    states = [await store.recipient_state(f"patient:{ins}") for ins in people]
    assert [s.purged_at for s in states] == [T0] * len(people)
    assert [s.channels for s in states] == [{"document_added": ["email"]}] * len(people)
