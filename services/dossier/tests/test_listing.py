"""A dossier's documents kept in its listings, on the real database: every change lands in one
update with its events, a new version supersedes the old in the same update, the scheduled
rules find hidden documents by the listings' `hiding`, a full dossier refuses more (and keeps
no content of what it refused), and
documents stored one record each (before listings) are folded in at start, events included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from dmp.events.v1 import envelope_pb2
from dmp_dossier import domain
from dmp_dossier import store as store_module
from dmp_dossier.store import (
    BESIDE,
    CONTENT_OF,
    FENCING,
    DossierStore,
    NewDocument,
    content_id,
    hidden_from_patient,
    listing_entries,
    listing_id,
    listing_of,
)
from dmp_kit.errors import Conflict, PermissionDenied
from dmp_kit.forget import forget_all
from dmp_kit.outbox import OUTBOX, PENDING, VERSION, new_document_with_events
from dmp_stack.testing import CommandsSent, Infra, make_ins

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[DossierStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    db = client[f"dossier_listing_{make_ins()}"]
    yield DossierStore(db)
    await client.drop_database(db.name)
    await client.close()


def _doc(ins: str, n: int, labels: list[str] | None = None) -> dict[str, Any]:
    return {
        "_id": f"doc-{n:04d}",
        "ins": ins,
        "type_code": "11488-4",
        "section": "reports",
        "title": f"CR {n}",
        "author": "10000000006",
        "author_kind": "professional",
        "created_at": T0 + timedelta(minutes=n),
        "service_start": None,
        "mime_type": "text/plain",
        "size": 3,
        "sha256": "ab" * 32,
        "labels": labels or [],
        "status": "approved",
        "reminded": False,
    }


def _event(n: int) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(id=f"event-{n}", type="document.added")


async def _chunks(store: DossierStore, ins: str, doc_id: str) -> int:
    """How many chunks of a document's content are stored (beside its dossier's record)."""
    return await store.dossiers.count_documents({"_id": content_id(ins, doc_id, 0)})


async def _outbox_ids(store: DossierStore, ins: str) -> set[str]:
    """The events waiting in the dossier's listings."""
    return {
        entry["id"]
        async for listing in store.listings.find({"ins": ins})
        for entry in listing.get(OUTBOX, [])
    }


async def test_changes_land_in_the_listing_with_their_events(store: DossierStore) -> None:
    ins = make_ins()
    for n in range(3):
        await store.insert_document(_doc(ins, n), b"abc", _event(n))
    old = await store.get_document(ins, "doc-0001")
    assert old is not None
    await store.insert_document(
        {**_doc(ins, 3), "replaces": "doc-0001"}, b"abc", _event(3), supersedes=old
    )
    docs = await store.documents_of(ins)
    assert [d["_id"] for d in docs] == ["doc-0003", "doc-0002", "doc-0001", "doc-0000"]
    assert docs[2]["status"] == "superseded" and docs[2]["replaced_by"] == "doc-0003"
    assert docs[0]["created_at"] == T0 + timedelta(minutes=3)  # dates come back as written
    assert docs[0]["chunks"] == 1
    assert await store.read_content(docs[0]) == b"abc"
    assert await _outbox_ids(store, ins) == {"event-0", "event-1", "event-2", "event-3"}
    replaced = await store.listings.find_one({"_id": listing_id(ins, docs[2]["listing"])})
    assert replaced is not None
    assert {d["_id"] for d in listing_entries(replaced)} >= {"doc-0001", "doc-0003"}, (
        "a new version is listed with the one it replaces: both change in one update"
    )

    hidden = await store.change_document_record(
        docs[1], lambda d: {"labels": [domain.HIDDEN_FROM_PATIENT]}, _event(4)
    )
    assert hidden is not None and hidden["labels"] == [domain.HIDDEN_FROM_PATIENT]
    assert hidden_from_patient(await store.documents_of(ins)) == 1
    hiding = store.listings.find({"ins": ins, "hiding": domain.HIDDEN_FROM_PATIENT})
    assert [listing["_id"] async for listing in hiding] == [listing_id(ins, docs[1]["listing"])]
    gone = {**docs[1], "_id": "no-such"}
    assert await store.change_document_record(gone, lambda d: {"status": "x"}) is None
    assert "event-4" in await _outbox_ids(store, ins)


async def test_the_schedule_reads_only_listings_that_hide(store: DossierStore) -> None:
    ins, other = make_ins(), make_ins()
    await store.insert_document(_doc(ins, 1, [domain.HIDDEN_FROM_PATIENT]), b"x")
    await store.insert_document(_doc(ins, 2), b"x")
    await store.insert_document(_doc(other, 3), b"x")
    due = await store.hidden_documents(T0 + timedelta(days=1), reminded=False)
    assert [d["_id"] for d in due] == ["doc-0001"]
    assert await store.hidden_documents(T0, reminded=False) == []  # not written before
    await store.change_document_record(due[0], lambda d: {"reminded": True})
    assert await store.hidden_documents(T0 + timedelta(days=1), reminded=False) == []
    assert len(await store.hidden_documents(T0 + timedelta(days=1), reminded=None)) == 1
    await store.change_document_record(due[0], lambda d: {"labels": []})
    assert await store.hidden_documents(T0 + timedelta(days=1), reminded=None) == []
    assert await store.listings.count_documents({"hiding": domain.HIDDEN_FROM_PATIENT}) == 0


async def test_a_full_dossier_refuses_more_and_keeps_what_it_has(
    store: DossierStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "DOCUMENTS_PER_LISTING", 2)
    monkeypatch.setattr(store_module, "LISTINGS", 1)
    ins = make_ins()
    await store.insert_document(_doc(ins, 1), b"x", _event(1))
    await store.insert_document(_doc(ins, 2), b"x", _event(2))
    with pytest.raises(Conflict) as refused:
        await store.insert_document(_doc(ins, 3), b"x", _event(3))
    assert refused.value.problem == "dossier-full"
    assert [d["_id"] for d in await store.documents_of(ins)] == ["doc-0002", "doc-0001"]
    assert await _outbox_ids(store, ins) == {"event-1", "event-2"}, "no event of the refused one"
    assert await _chunks(store, ins, "doc-0003") == 0, "nor its content"
    assert await _chunks(store, ins, "doc-0002") == 1


async def test_a_new_document_is_added_after_the_listed_ones_as_stored(
    store: DossierStore,
) -> None:
    """A new document's metadata follows the listing's stored bytes, which are kept as they
    are: adding costs the same whatever the listing holds. Its count and hiding labels
    follow."""
    ins = make_ins()
    # every document in one listing
    ids = [f"doc-{n:04d}" for n in range(10_000) if listing_of(f"doc-{n:04d}") == 5][:3]
    first = {**_doc(ins, 1, [domain.HIDDEN_FROM_PATIENT]), "_id": ids[0]}
    await store.insert_document(first, b"x", _event(1))
    record = listing_id(ins, 5)
    before = await store.listings.find_one({"_id": record})
    assert before is not None and before[store_module.LISTED] == 1
    for n, doc_id in enumerate(ids[1:], start=2):
        await store.insert_document(
            {**_doc(ins, n, [domain.HIDDEN_FROM_REPRESENTATIVES]), "_id": doc_id},
            b"x",
            _event(n),
        )
    after = await store.listings.find_one({"_id": record})
    assert after is not None
    assert bytes(after["docs"]).startswith(bytes(before["docs"])), "the listed ones untouched"
    assert after[store_module.LISTED] == 3
    assert after["hiding"] == sorted(
        [domain.HIDDEN_FROM_PATIENT, domain.HIDDEN_FROM_REPRESENTATIVES]
    )
    assert [d["_id"] for d in await store.documents_of(ins)] == ids[::-1]


async def test_a_listing_in_the_earlier_layout_is_read_and_rewritten_at_its_next_change(
    store: DossierStore,
) -> None:
    """Listings written before 2026-12-06 hold one BSON document `{"d": [documents]}` and no
    count: read as they are, and written the new way (every document kept) by the next
    document added, a unique id still checked against those they hold."""
    ins = make_ins()
    ids = [f"doc-{n:04d}" for n in range(10_000) if listing_of(f"doc-{n:04d}") == 7][:4]
    held = [
        {**_doc(ins, 1, [domain.HIDDEN_FROM_PATIENT]), "_id": ids[0], "listing": 7},
        {**_doc(ins, 2), "_id": ids[1], "listing": 7, "context": {"unique_id": "1.2.3"}},
    ]
    record = listing_id(ins, 7)
    await store.listings.insert_one(
        {
            "_id": record,
            "ins": ins,
            "docs": bson.Binary(bson.encode({"d": held})),
            "hiding": [domain.HIDDEN_FROM_PATIENT],
            VERSION: 4,
        }
    )
    assert [d["_id"] for d in await store.documents_of(ins)] == [ids[1], ids[0]]
    twin = {**_doc(ins, 3), "_id": ids[2], "context": {"unique_id": "1.2.3"}}
    with pytest.raises(Conflict) as refused:
        await store.insert_document(twin, b"x", _event(3))
    assert refused.value.problem == "duplicate-unique-id"
    await store.insert_document({**_doc(ins, 3), "_id": ids[2]}, b"x", _event(3))
    listing = await store.listings.find_one({"_id": record})
    assert listing is not None and listing[store_module.LISTED] == 3
    assert [d["_id"] for d in bson.decode_all(bytes(listing["docs"]))] == [ids[2], *ids[:2]]
    assert [d["_id"] for d in await store.documents_of(ins)] == ids[2::-1]
    assert [d["_id"] for d in await store.documents_of(ins)] == ids[2::-1]
    assert listing["hiding"] == [domain.HIDDEN_FROM_PATIENT]
    # in the new layout, a unique id is still checked against those the listing holds
    with pytest.raises(Conflict) as again:
        await store.insert_document({**twin, "_id": ids[3]}, b"x", _event(4))
    assert again.value.problem == "duplicate-unique-id"


async def test_documents_stored_one_record_each_are_folded_in(store: DossierStore) -> None:
    ins, other = make_ins(), make_ins()
    await store.insert_document(_doc(ins, 1), b"x")  # already listed
    await store.legacy_documents.insert_many(
        [
            new_document_with_events({**_doc(ins, 1), "chunks": 1}, _event(10)),
            new_document_with_events({**_doc(ins, 2), "chunks": 1}, _event(11)),
            {**_doc(other, 3), "chunks": 1, OUTBOX: [], "_v": 2},
        ]
    )
    assert await store.fold_documents() == 3
    assert await store.legacy_documents.count_documents({}) == 0
    assert [d["_id"] for d in await store.documents_of(ins)] == ["doc-0002", "doc-0001"]
    folded = (await store.documents_of(other))[0]
    assert folded == {**_doc(other, 3), "chunks": 1, "listing": listing_of("doc-0003")}, (
        "no outbox or version in the listing"
    )
    assert await _outbox_ids(store, ins) == {"event-10", "event-11"}, "pending events carried"
    assert await store.listings.count_documents({"ins": ins, PENDING: True}) >= 1
    assert await store.fold_documents() == 0


async def test_a_dossiers_listings_are_read_by_their_id_range_and_no_other(
    store: DossierStore,
) -> None:
    """The read names the shard key (a range of `_id`s, docs/scaling.md) besides `ins`: every
    listing of the dossier, none of a dossier whose INS follows or precedes it."""
    ins = make_ins()
    neighbours = [f"{int(ins) - 1:015d}", f"{int(ins) + 1:015d}"]
    for n, owner in enumerate([ins, *neighbours, ins]):
        await store.insert_document(_doc(owner, n) | {"_id": f"doc-{owner}-{n}"}, b"abc")
    found = [d async for d in store.listings.find(store_module.of_dossier(ins), {"_id": 1})]
    assert found and {d["_id"].split(":")[0] for d in found} == {ins}
    assert {d["_id"] for d in await store.documents_of(ins)} == {f"doc-{ins}-0", f"doc-{ins}-3"}
    for owner in neighbours:
        assert [d["ins"] for d in await store.documents_of(owner)] == [owner]


def _dossier(ins: str) -> dict[str, Any]:
    return {"_id": ins, "status": "open", "opened_by": "patient", "opened_at": T0}


async def test_a_dossier_and_its_documents_are_one_read(store: DossierStore, infra: Infra) -> None:
    """The record and its listings share `ins` in `dossiers`: one `find` reads both, and none
    of a neighbouring dossier's. A record from before it carried `ins` is read by `_id` (a
    second query, once) and given it."""
    ins, before = make_ins(), make_ins()
    await store.insert_dossier(_dossier(ins))
    await store.dossiers.insert_one(_dossier(before))  # as stored before: no `ins`
    neighbour = f"{int(ins) + 1:015d}"
    await store.insert_dossier(_dossier(neighbour))
    for n, owner in enumerate([ins, ins, before, neighbour]):
        await store.insert_document(_doc(owner, n) | {"_id": f"doc-{owner}-{n}"}, b"abc")

    commands = CommandsSent()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongo.url, tz_aware=True, event_listeners=[commands]
    )

    def finds() -> list[str]:
        return [command["find"] for command in commands.of("find")]

    try:
        watched = DossierStore(client[store.db.name])
        dossier, docs = await watched.dossier_and_documents(ins)
        assert finds() == ["dossiers"]
        assert dossier is not None and dossier["_id"] == ins and OUTBOX not in dossier
        assert [d["_id"] for d in docs] == [f"doc-{ins}-1", f"doc-{ins}-0"]
        commands.sent.clear()
        dossier, docs = await watched.dossier_and_documents(before)
        assert dossier is not None and [d["_id"] for d in docs] == [f"doc-{before}-2"]
        assert finds().count("dossiers") >= 2, "read again by `_id`"
        commands.sent.clear()
        assert (await watched.dossier_and_documents(before))[0] == {
            **dossier,
            "ins": before,
            "_v": 1,
        }
        assert finds() == ["dossiers"], "given `ins`: one read from then on"
        assert await watched.dossier_and_documents(make_ins()) == (None, [])
    finally:
        await client.close()


async def test_listings_stored_in_their_own_collection_are_moved_beside_their_dossier(
    store: DossierStore,
) -> None:
    ins = make_ins()
    await store.insert_dossier(_dossier(ins))
    for n in range(3):
        await store.insert_document(_doc(ins, n), b"abc", _event(n))
    moved = [d async for d in store.listings.find(store_module.of_dossier(ins))]
    assert moved and any(d.get(OUTBOX) for d in moved)
    # as stored before: the listings in `listings`, one of them also already moved (a cut)
    await store.former_listings.insert_many(moved)
    await store.listings.delete_many({"_id": {"$in": [d["_id"] for d in moved[1:]]}})
    assert len(await store.documents_of(ins)) < 3
    # and a request answered meanwhile wrote a new document into one not moved yet
    target = int(moved[-1]["_id"].rsplit(":", 1)[1])
    new_id = next(f"doc-new-{k}" for k in range(10_000) if listing_of(f"doc-new-{k}") == target)
    late = {**_doc(ins, 9), "_id": new_id}
    await store.insert_document(late, b"abc", _event(9))
    assert await store.fold_listings() == len(moved)
    assert await store.former_listings.count_documents({}) == 0
    assert [d["_id"] for d in await store.documents_of(ins)] == [
        new_id,
        "doc-0002",
        "doc-0001",
        "doc-0000",
    ], "merged, none dropped"
    assert await _outbox_ids(store, ins) >= {"event-0", "event-1", "event-2", "event-9"}
    assert await store.fold_listings() == 0


async def test_a_shared_read_decodes_a_listing_once_and_again_once_changed(
    store: DossierStore,
) -> None:
    ins = make_ins()
    await store.insert_dossier({"_id": ins, "status": "open"})
    for n in range(3):
        await store.insert_document(_doc(ins, n), b"abc")
    _, first = await store.dossier_and_documents(ins, shared=True)
    _, again = await store.dossier_and_documents(ins, shared=True)
    assert [d["_id"] for d in again] == ["doc-0002", "doc-0001", "doc-0000"]
    assert all(a is b for a, b in zip(first, again, strict=True)), "decoded once"
    _, own = await store.dossier_and_documents(ins)
    assert own == again and not any(a is b for a, b in zip(own, again, strict=True))
    # Changed, its listing's bytes are new: decoded again, the change in it.
    await store.change_document_record(first[1], lambda d: {"title": "Nouveau titre"})
    _, changed = await store.dossier_and_documents(ins, shared=True)
    assert [d["title"] for d in changed] == ["CR 2", "Nouveau titre", "CR 0"]
    # Held by their stored bytes' size, and forgotten with the dossier.
    listings = store.listings.find({"ins": ins, "docs": {"$exists": True}})
    stored = [len(bytes(listing["docs"])) async for listing in listings]
    assert store._decoded.currsize >= sum(stored)
    await store.purge(ins)
    assert not [key for key in store._decoded if key[0] == ins]


async def test_a_dossier_another_replica_purged_leaves_this_ones_memory_within_a_period(
    store: DossierStore,
) -> None:
    """The replica that purges forgets the dossier at once; another, not told, holds its key
    and listings until its caches of patient data are next emptied (dmp_kit.forget)."""
    ins = make_ins()
    await store.insert_dossier(_dossier(ins))
    await store.insert_document(_doc(ins, 0), b"abc")
    other = DossierStore(store.db)  # another replica: a memory of its own
    master = bytes(range(32))
    record = await other.get_dossier(ins)
    assert record is not None
    key = await other.data_key(ins, master, record)
    _, listed = await other.dossier_and_documents(ins, shared=True)
    assert [d["_id"] for d in listed] == ["doc-0000"]

    def held(replica: DossierStore) -> list[object]:
        return [k for k in (*replica._keys, *replica._decoded) if k[0] == ins]

    await store.purge(ins)
    assert not held(store) and len(held(other)) == 2, "the other replica was not told"
    assert await other.data_key(ins, master, record) == key, "its key, from memory"
    forget_all()
    assert not held(other)
    assert await other.data_key(ins, master, record) != key, "purged: a key never seen"


async def test_content_is_stored_beside_its_dossier_and_purged_with_it(
    store: DossierStore,
) -> None:
    """A document's content is stored in `dossiers`, just past its dossier's record and
    listings, where no query of them reaches it; one written before 2026-12-06 has its content
    in `chunks`, read there. A purge takes both, and content no listing names (a submission
    that failed midway), and nothing of a neighbouring dossier."""
    ins = make_ins()
    neighbour = f"{int(ins) + 1:015d}"
    for patient in (ins, neighbour):
        await store.insert_dossier(_dossier(patient))
        await store.insert_document(_doc(patient, 0) | {"_id": f"new-{patient}"}, b"new")
    before = _doc(ins, 1)
    await store.insert_document(before, b"before")
    # as written before: its chunks in `chunks`, its entry not marked
    stored = await store.dossiers.find_one({"_id": content_id(ins, before["_id"], 0)})
    assert stored is not None and stored[CONTENT_OF] == ins and "ins" not in stored
    await store.dossiers.delete_one({"_id": stored["_id"]})
    chunk = {"_id": f"{before['_id']}:0", "doc_id": before["_id"], "n": 0, "data": stored["data"]}
    await store.chunks.insert_one(chunk)
    entry = await store.get_document(ins, before["_id"])
    assert entry is not None and entry[BESIDE]
    await store.change_document_record(entry, lambda d: {BESIDE: False})
    orphan = {"_id": content_id(ins, "doc-9999", 0), CONTENT_OF: ins, "data": b"x"}
    await store.dossiers.insert_one(orphan)

    record, listed = await store.dossier_and_documents(ins)
    assert record is not None and record["_id"] == ins
    assert {d["_id"] for d in listed} == {f"new-{ins}", before["_id"]}  # no content
    assert {d["_id"] for d in await store.documents_of(ins)} == {f"new-{ins}", before["_id"]}
    contents = {d["_id"]: await store.read_content(d) for d in listed}
    assert contents == {f"new-{ins}": b"new", before["_id"]: b"before"}

    await store.purge(ins)
    assert await store.dossiers.count_documents({"_id": {"$regex": f"^{ins}"}}) == 0
    assert await store.chunks.count_documents({"doc_id": before["_id"]}) == 0
    kept = await store.documents_of(neighbour)
    assert [await store.read_content(d) for d in kept] == [b"new"]


async def test_a_document_joins_a_listing_this_process_wrote_without_reading_it(
    store: DossierStore, infra: Infra
) -> None:
    """A submission's listing is written on the version this process wrote last, unread: the
    content inserted and the listing updated, two commands. A listing another replica wrote
    since is read before the write, and keeps that replica's document; a purge leaves nothing
    of the dossier remembered."""
    ins = make_ins()
    same = [f"doc-{k}" for k in range(1000) if listing_of(f"doc-{k}") == 7][:3]
    commands = CommandsSent()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongo.url, tz_aware=True, event_listeners=[commands]
    )
    try:
        watched = DossierStore(client[store.db.name])
        await watched.insert_document(_doc(ins, 0) | {"_id": same[0]}, b"abc", _event(0))
        commands.sent.clear()
        await watched.insert_document(_doc(ins, 1) | {"_id": same[1]}, b"abc", _event(1))
        assert [name for name, _ in commands.sent] == ["insert", "update"]
        # another replica changes the listing: this process's memory of it is left as it was
        memory, key = store_module.written_documents, listing_id(ins, 7)
        kept = memory.get(store.listings.full_name, key)
        assert kept is not None
        first = await store.get_document(ins, same[0])
        assert first is not None
        await store.change_document_record(first, lambda d: {"title": "Changé"})
        memory.put(store.listings.full_name, key, kept)
        commands.sent.clear()
        await watched.insert_document(_doc(ins, 3) | {"_id": same[2]}, b"abc", _event(3))
        assert [name for name, _ in commands.sent] == ["insert", "update", "find", "update"]
        listed = {d["_id"]: d for d in await store.documents_of(ins)}
        assert set(same) <= set(listed) and listed[same[0]]["title"] == "Changé"
        assert await _outbox_ids(store, ins) >= {"event-0", "event-1", "event-3"}
        await watched.purge(ins)
        assert memory.get(store.listings.full_name, key) is None
    finally:
        await client.close()


async def _opened(store: DossierStore, listing: int, documents: int) -> tuple[str, list[str]]:
    """A dossier opened, and `documents` ids of new documents that all join `listing`."""
    ins = make_ins()
    await store.insert_dossier(_dossier(ins))
    ids = (f"doc-{k}" for k in range(100_000))
    return ins, [doc_id for doc_id in ids if listing_of(doc_id) == listing][:documents]


class Admission:
    """A submission's `decide` as the service's: refused unless the dossier is open (consent's
    rule), noting each record it was given."""

    def __init__(self) -> None:
        self.given: list[dict[str, Any] | None] = []

    def __call__(self, doc: dict[str, Any]) -> Any:
        async def decide(record: dict[str, Any] | None) -> NewDocument:
            self.given.append(record)
            if record is None or record["status"] != "open":
                raise PermissionDenied("the dossier is not open")
            return NewDocument(doc, b"sealed", (_event(len(self.given)),))

        return decide


async def test_a_submission_is_decided_on_the_record_its_listing_was_last_written_on(
    store: DossierStore, infra: Infra
) -> None:
    """A listing this process wrote is written again unread, decided on the record its last
    write was decided on: the content inserted and the listing updated, in one command. A change
    of the record's deciding fields (a closing, a consent change) gives every listing a new
    version before it is answered: the next submission decided on the record as it was does
    not land, and is decided again on the record as it is — here, refused, leaving no content.
    Nothing is kept of a listing this process created: it read no version a fence could move."""
    ins, same = await _opened(store, listing=7, documents=8)
    commands = CommandsSent()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongo.url, tz_aware=True, event_listeners=[commands]
    )
    admission = Admission()

    async def submit(n: int) -> list[str]:
        commands.sent.clear()
        doc = _doc(ins, n) | {"_id": same[n]}
        await watched.add_document(ins, doc, admission(doc))
        return [name for name, _ in commands.sent]

    try:
        watched = DossierStore(client[store.db.name])
        # listing, then record; the listing created: the content first, on its own
        assert await submit(0) == ["find", "find", "update", "insert"]
        assert await submit(1) == ["find", "find", "update"]  # created: read again
        assert await submit(2) == ["update"]  # the content and the listing, one command
        assert admission.given[-1] == admission.given[-2]
        assert set(admission.given[-1] or {}) == {"_id", "opened_at", "status"}
        # Two at once: the second is guarded by the first's write, decided on the same record.
        commands.sent.clear()
        both = [_doc(ins, n) | {"_id": same[n]} for n in (6, 7)]
        await asyncio.gather(*(watched.add_document(ins, d, admission(d)) for d in both))
        assert sorted(name for name, _ in commands.sent) == ["update", "update"]

        # Consent changes: the epoch is new. The next submission, decided on the record as it
        # was, does not land; its content goes, and it is decided again on the new epoch.
        await store.mark_consent_change(ins, "change-1", done=True, now=T0)
        assert await submit(3) == [
            *("update", "find", "find"),  # remembered, fenced: listing, record read
            *("delete", "find", "find", "update"),  # decided again, written
        ]
        epoch = (admission.given[-1] or {})["consent_mark"]["epoch"]
        assert epoch and "consent_mark" not in (admission.given[-2] or {})

        # Another replica closes the dossier: decided on the open record, then again, refused.
        await store.change_dossier(ins, lambda d: {"status": "closed"})
        with pytest.raises(PermissionDenied):
            await submit(4)
        assert [(r or {}).get("status") for r in admission.given[-2:]] == ["open", "closed"]
        assert await _chunks(store, ins, same[4]) == 0
        listed = {d["_id"] for d in await store.documents_of(ins)}
        assert listed == set(same[:4]) | {same[6], same[7]}
        # the events of what was written, and of no decision that did not land
        events = await _outbox_ids(store, ins)
        assert events >= {f"event-{k}" for k in (1, 2, 3, 4, 5, 7)}
        assert not events & {"event-6", "event-8", "event-9"}
    finally:
        await client.close()


async def test_content_goes_in_a_command_of_its_own_beyond_those_at_once(
    store: DossierStore, infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond TOGETHER_AT_ONCE submissions writing their content with their listing, the
    content is inserted first, on its own (FerretDB holds a connection per update of a
    command): two commands, the same outcome."""
    ins, same = await _opened(store, listing=3, documents=3)
    commands = CommandsSent()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongo.url, tz_aware=True, event_listeners=[commands]
    )
    try:
        watched = DossierStore(client[store.db.name])
        admission = Admission()
        for n in (0, 1):  # created, then written unread
            doc = _doc(ins, n) | {"_id": same[n]}
            await watched.add_document(ins, doc, admission(doc))
        monkeypatch.setattr(store_module, "TOGETHER_AT_ONCE", 0)
        commands.sent.clear()
        doc = _doc(ins, 2) | {"_id": same[2]}
        await watched.add_document(ins, doc, admission(doc))
        assert [name for name, _ in commands.sent] == ["insert", "update"]
        assert watched._together == 0
        listed = {d["_id"]: d for d in await store.documents_of(ins)}
        assert set(same) <= set(listed)
        assert [await store.read_content(listed[i]) for i in same] == [b"sealed"] * 3
    finally:
        await client.close()


@pytest.mark.parametrize("fails", ["before its write", "cancelled before its write", "after"])
async def test_a_failed_submission_leaves_its_content_only_where_its_listing_may_name_it(
    store: DossierStore, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """A submission failing otherwise than by a refusal — the database gone, a lease not
    obtained, the request cancelled — deletes its content if no write of its listing was sent:
    nothing names it. Once one was sent, it may have landed with its answer lost, and the
    content stays for the listing that names it."""
    ins, same = await _opened(store, listing=2, documents=1)
    real = store_module.change_document
    waiting = asyncio.Event()

    async def failing(*args: Any, **kwargs: Any) -> Any:
        if fails == "before its write":
            raise AutoReconnect("the database went away")
        if fails == "cancelled before its write":
            waiting.set()
            await asyncio.Event().wait()
        await real(*args, **kwargs)
        raise AutoReconnect("the answer was lost")

    monkeypatch.setattr(store_module, "change_document", failing)
    doc = _doc(ins, 0) | {"_id": same[0]}
    submission = asyncio.create_task(store.add_document(ins, doc, Admission()(doc)))
    if fails == "cancelled before its write":
        await waiting.wait()
        assert await _chunks(store, ins, same[0]) == 0  # sent with the listing's write
        submission.cancel()
    with pytest.raises(asyncio.CancelledError if fails.startswith("cancelled") else AutoReconnect):
        await submission
    listed = same[0] in {d["_id"] for d in await store.documents_of(ins)}
    chunks = await _chunks(store, ins, same[0])
    assert (listed, chunks) == ((True, 1) if fails == "after" else (False, 0))


@pytest.mark.parametrize("next_touch", ["read", "change that changes nothing"])
async def test_a_record_change_whose_fence_never_ran_is_fenced_by_the_next_read(
    store: DossierStore, next_touch: str
) -> None:
    """A change of the record's deciding fields is marked in its own write until its listings
    are fenced: a process that died in between leaves the mark, and the next read of the record
    (a consultation, a submission reading it) or change of it (even one that finds nothing to
    change, as a redelivered event does) fences, so that no submission remembered from before
    lands on the record as it was."""
    ins, same = await _opened(store, listing=3, documents=4)
    admission = Admission()
    for n in range(3):
        doc = _doc(ins, n) | {"_id": same[n]}
        await store.add_document(ins, doc, admission(doc))
    listing = listing_id(ins, 3)
    before = await store.listings.find_one({"_id": listing})
    assert before is not None
    # the change written, its process gone before its fence
    await store.dossiers.update_one(
        {"_id": ins}, {"$set": {"status": "closed", FENCING: "1764900000:died-before-its-fence"}}
    )
    if next_touch == "read":
        dossier, _ = await store.dossier_and_documents(ins)
        assert dossier is not None and dossier["status"] == "closed"
    else:
        assert await store.change_dossier(ins, lambda d: None) is not None
    after = await store.listings.find_one({"_id": listing})
    assert after is not None and after[VERSION] == before[VERSION] + 1
    assert FENCING not in (await store.dossiers.find_one({"_id": ins}) or {})
    doc = _doc(ins, 3) | {"_id": same[3]}
    with pytest.raises(PermissionDenied):
        await store.add_document(ins, doc, admission(doc))
    assert [(r or {}).get("status") for r in admission.given[-2:]] == ["open", "closed"]
    assert same[3] not in {d["_id"] for d in await store.documents_of(ins)}


async def test_without_remembered_records_every_submission_reads_its_record(
    infra: Infra, store: DossierStore
) -> None:
    """DMP_REMEMBER_RECORDS=false (while replicas that do not fence remain, in an upgrade): a
    submission reads its listing and the record every time, and writes as before."""
    ins, same = await _opened(store, listing=5, documents=3)
    commands = CommandsSent()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongo.url, tz_aware=True, event_listeners=[commands]
    )
    admission = Admission()
    try:
        reading = DossierStore(client[store.db.name], remember_records=False)
        for n in range(3):
            commands.sent.clear()
            doc = _doc(ins, n) | {"_id": same[n]}
            await reading.add_document(ins, doc, admission(doc))
            assert [name for name, _ in commands.sent][:2] == ["find", "find"]
        assert {d["_id"] for d in await store.documents_of(ins)} == set(same)
    finally:
        await client.close()


async def test_fences_beside_submissions_lose_no_document_and_no_fence(
    store: DossierStore,
) -> None:
    """Consent changes (each fencing every listing) at the same moment as submissions to one
    listing: FerretDB writes a whole document back for an update, so a fence written beside a
    submission would undo one of the two. Under the listings' locks, every document lands and
    every fence moves the listing's version: one version per write and per fence."""
    ins, same = await _opened(store, listing=9, documents=60)
    admission = Admission()
    changes = 40

    async def submit(doc_id: str) -> None:
        doc = _doc(ins, 0) | {"_id": doc_id}
        await store.add_document(ins, doc, admission(doc))

    async def consent_change(n: int) -> None:
        await store.mark_consent_change(ins, f"change-{n // 2}", done=n % 2 == 1, now=T0)

    await submit(same[0])  # the listing made: every fence finds it
    await asyncio.gather(
        *(consent_change(n) for n in range(changes)), *(submit(doc_id) for doc_id in same[1:])
    )
    assert {d["_id"] for d in await store.documents_of(ins)} == set(same)
    listing = await store.listings.find_one({"_id": listing_id(ins, 9)})
    assert listing is not None and listing[VERSION] == len(same) + changes
    assert FENCING not in (await store.dossiers.find_one({"_id": ins}) or {})
