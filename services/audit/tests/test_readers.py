"""Who reads a dossier's whole trace, mirrored on audit's real database: legal representatives
while the dossier is open, the unblocked GP, nobody of the old dossier after a purge — whatever
order the events arrive in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from dmp_audit.api import _micros
from dmp_audit.store import AuditStore
from dmp_stack.testing import Infra, make_ins, make_rpps

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[AuditStore]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    yield AuditStore(client["audit_readers_test"])
    await client.close()


async def test_representatives_read_while_open_and_a_purge_forgets_every_reader(
    store: AuditStore,
) -> None:
    ins, parent, gp = make_ins(), make_ins(), make_rpps()
    await store.note_dossier(ins, True, [parent], order=10)
    await store.note_care_change(ins, "attending_physician", gp, order=11)
    readers = await store.readers(ins)
    assert (readers.attending_physician, readers.representatives) == (gp, {parent})
    assert readers.purged_order is None

    await store.note_dossier(ins, False, None, order=12)  # closed: rule 13, nobody but the patient
    readers = await store.readers(ins)
    assert (readers.attending_physician, readers.representatives) == ("", frozenset())
    await store.note_dossier(ins, True, None, order=13)  # reopened: the same readers
    readers = await store.readers(ins)
    assert (readers.attending_physician, readers.representatives) == (gp, {parent})

    await store.forget_dossier(ins, order=20)
    await store.forget_dossier(ins, order=20)  # redelivered: the same
    # events older than the purge, delivered late, bring nothing back
    await store.note_care_change(ins, "attending_physician", gp, order=19)
    await store.note_dossier(ins, True, [parent], order=18)
    readers = await store.readers(ins)
    assert (readers.attending_physician, readers.representatives) == ("", frozenset())
    assert readers.purged_order == 20

    # a DMP opened again: its own readers, and the old trace hidden from them
    await store.note_dossier(ins, True, [], order=30)
    await store.note_care_change(ins, "attending_physician", gp, order=31)
    readers = await store.readers(ins)
    assert readers.attending_physician == gp and readers.purged_order == 20


async def test_entry_times_compare_with_event_order() -> None:
    assert _micros("1970-01-01T00:00:01.000002Z") == 1_000_002


async def test_former_representatives_read_no_more_whatever_comes_late(store: AuditStore) -> None:
    """A minor's majority (identity.representation.ended): the representatives it names read
    the trace no more, and no dossier event naming them, late or redelivered, gives it back."""
    ins, mother, father = make_ins(), make_ins(), make_ins()
    await store.drop_representatives(ins, [mother])  # before the dossier's opening comes
    await store.note_dossier(ins, True, [mother, father], order=10)
    assert (await store.readers(ins)).representatives == {father}

    await store.drop_representatives(ins, [mother, father])
    await store.drop_representatives(ins, [mother, father])  # redelivered: the same
    assert (await store.readers(ins)).representatives == frozenset()
    await store.note_dossier(ins, True, [mother, father], order=9)  # older, late
    await store.note_dossier(ins, True, [mother, father], order=11)  # newer, naming them still
    readers = await store.readers(ins)
    assert readers.representatives == frozenset()
