"""Consent's reused states on its real database: every write lands between the marks of its
change, a state is reused only under the epoch it was read under, and a write that could not
be marked is not made; and how long its verdicts may be reused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from dmp_consent import store as store_module
from dmp_consent.api import VERDICT_REUSE_SECONDS, reusable_until
from dmp_consent.domain import ConsentState, DossierStatus, EmergencyGrant, Mode
from dmp_consent.store import ConsentStore, consent_state
from dmp_kit.errors import Unavailable
from dmp_kit.outbox import VERSION
from dmp_stack.testing import Infra, make_ins

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BLOCKED = "10000000022"


class Marks:
    """What each mark saw of the record: the blocked professionals, as stored then."""

    def __init__(self) -> None:
        self.store: ConsentStore | None = None
        self.seen: list[tuple[str, str, frozenset[str]]] = []
        self.refuse = False

    async def _saw(self, what: str, ins: str, change_id: str) -> None:
        assert self.store is not None
        doc = await self.store.get(ins)
        self.seen.append((what, change_id, consent_state(doc).blocked))

    async def begin(self, ins: str, change_id: str) -> None:
        if self.refuse:
            raise Unavailable("dossier did not answer")
        await self._saw("begin", ins, change_id)

    async def end(self, ins: str, change_id: str) -> None:
        await self._saw("end", ins, change_id)


@pytest.fixture
async def marked(infra: Infra) -> AsyncIterator[tuple[ConsentStore, Marks]]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    marks = Marks()
    store = ConsentStore(client["consent_reuse_test"], marks)
    marks.store = store
    yield store, marks
    await client.close()


async def test_a_write_lands_between_the_marks_of_its_change(
    marked: tuple[ConsentStore, Marks],
) -> None:
    store, marks = marked
    ins = make_ins()
    await store.record_dossier_status(ins, DossierStatus.OPEN, T0, [])
    marks.seen.clear()
    await store.change(ins, lambda doc: {"blocked": [{"rpps": BLOCKED}]})
    (begin, begun, before), (end, ended, after) = marks.seen
    assert (begin, end) == ("begin", "end") and begun == ended and len(begun) == 32
    assert before == frozenset() and after == {BLOCKED}


async def test_a_state_is_reused_only_under_the_epoch_it_was_read_under(
    marked: tuple[ConsentStore, Marks],
) -> None:
    store, _ = marked
    ins = make_ins()
    await store.record_dossier_status(ins, DossierStatus.OPEN, T0, [])
    assert (await store.consent_of(ins, "e1")).blocked == frozenset()
    # Behind the store's back (as another replica would, marks aside): the epoch is what
    # tells a reader, so under e1 the state read before stands, under e2 it is read again.
    await store.consents.update_one({"_id": ins}, {"$set": {"blocked": [{"rpps": BLOCKED}]}})
    assert (await store.consent_of(ins, "e1")).blocked == frozenset()
    assert (await store.consent_of(ins, "e2")).blocked == {BLOCKED}
    # No epoch (a change under way, or a caller that gives none): read every time.
    await store.consents.update_one({"_id": ins}, {"$set": {"blocked": []}})
    assert (await store.consent_of(ins, "")).blocked == frozenset()
    assert (await store.consent_of(ins, "e2")).blocked == {BLOCKED}


async def test_a_change_that_cannot_be_marked_is_not_written(
    marked: tuple[ConsentStore, Marks],
) -> None:
    store, marks = marked
    ins = make_ins()
    await store.record_dossier_status(ins, DossierStatus.OPEN, T0, [])
    marks.refuse = True
    with pytest.raises(Unavailable):
        await store.change(ins, lambda doc: {"blocked": [{"rpps": BLOCKED}]})
    assert consent_state(await store.get(ins)).blocked == frozenset()


async def test_without_marks_no_state_is_reused(infra: Infra) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    try:
        store = ConsentStore(client["consent_reuse_test"])
        ins = make_ins()
        await store.record_dossier_status(ins, DossierStatus.OPEN, T0, [])
        assert (await store.consent_of(ins, "e1")).blocked == frozenset()
        await store.consents.update_one({"_id": ins}, {"$set": {"blocked": [{"rpps": BLOCKED}]}})
        assert (await store.consent_of(ins, "e1")).blocked == {BLOCKED}
    finally:
        await client.close()


async def test_only_writes_that_may_change_the_consent_state_are_marked(
    marked: tuple[ConsentStore, Marks],
) -> None:
    """A dossier's statuses and representatives are learnt with dossier away (no mark), and
    leave the consent state as it was; a purge, which forgets every grant, is marked."""
    store, marks = marked
    ins, parent = make_ins(), make_ins()
    await store.record_dossier_status(ins, DossierStatus.OPEN, T0, [parent])
    assert consent_state(await store.get(ins)) == consent_state(None)
    await store.change(ins, lambda doc: {"blocked": [{"rpps": BLOCKED}]})
    blocked = consent_state(await store.get(ins))
    marks.seen.clear()
    later = T0 + timedelta(days=1)
    await store.record_dossier_status(ins, DossierStatus.CLOSED, later, [])
    await store.record_dossier_status(ins, DossierStatus.OPEN, later + timedelta(days=1), [parent])
    await store.drop_representatives(ins, [parent])
    await store.adopt_dossier_status(ins, DossierStatus.OPEN, [])
    assert marks.seen == []
    assert consent_state(await store.get(ins)) == blocked
    await store.record_dossier_status(ins, DossierStatus.ABSENT, later + timedelta(days=2), [])
    assert [what for what, _, _ in marks.seen] == ["begin", "end"]
    assert consent_state(await store.get(ins)) == consent_state(None)


async def test_verdicts_are_reusable_until_the_next_grant_ends_and_a_minute_at_most() -> None:
    now = T0
    grant = EmergencyGrant("10000000030", Mode.BREAK_GLASS, now + timedelta(seconds=10))
    gone = EmergencyGrant("10000000030", Mode.BREAK_GLASS, now - timedelta(seconds=1))
    assert reusable_until(ConsentState(), now) == now + timedelta(seconds=VERDICT_REUSE_SECONDS)
    assert reusable_until(ConsentState(grants=(gone, grant)), now) == grant.expires_at
    assert reusable_until(ConsentState(grants=(gone,)), now) == now + timedelta(
        seconds=VERDICT_REUSE_SECONDS
    )


async def test_a_retried_write_is_marked_again_once_its_mark_is_old(
    marked: tuple[ConsentStore, Marks], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer lands between this change's read and write, so it retries: marked once
    while the mark is fresh, and again before the retry when it is old."""
    store, marks = marked
    ins = make_ins()
    await store.record_dossier_status(ins, DossierStatus.OPEN, T0, [])

    async def changed_by_another() -> list[str]:
        raced = False
        real_begin = marks.begin

        async def begin(ins_: str, change_id: str) -> None:
            nonlocal raced
            await real_begin(ins_, change_id)
            if not raced:  # the record changes after this attempt read it
                raced = True
                await store.consents.update_one({"_id": ins}, {"$inc": {VERSION: 1}})

        marks.seen.clear()
        monkeypatch.setattr(marks, "begin", begin)
        await store.change(ins, lambda doc: {"blocked": [{"rpps": BLOCKED}]})
        monkeypatch.undo()
        return [what for what, _, _ in marks.seen]

    assert await changed_by_another() == ["begin", "end"]
    monkeypatch.setattr(store_module, "REMARK_SECONDS", -1.0)
    kinds = await changed_by_another()
    assert kinds == ["begin", "begin", "end"], kinds
