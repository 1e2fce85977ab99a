"""All of the dossier service's database access."""

from __future__ import annotations

import contextlib
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import bson
from bson import Binary
from bson.codec_options import CodecOptions
from cachetools import LRUCache
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from dmp.events.v1 import envelope_pb2
from dmp_dossier import domain
from dmp_kit.crypto import seal, unseal
from dmp_kit.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, PermissionDenied
from dmp_kit.forget import patient_data
from dmp_kit.logging import get_logger
from dmp_kit.mongo import Document, Store, document_locks, insert_once
from dmp_kit.outbox import (
    MAX_ATTEMPTS,
    OUTBOX,
    PENDING,
    UNREAD,
    VERSION,
    Change,
    change_document,
    new_document_with_events,
    written_documents,
    written_version,
)

CHUNK_BYTES = 4 * 1024 * 1024  # documents are at most 16 MB in MongoDB; content is chunked
# A listed document whose content's chunks are beside its dossier's record in `dossiers`
# (`content_id`), not in `chunks` (every document written before 2026-12-06).
BESIDE = "beside"
# A content chunk's field naming its dossier (not `ins`: no query of listings may find it).
CONTENT_OF = "content_of"
# Submissions of this process writing their content in their listing's command at once; more
# write it first, in a command of its own. FerretDB 1.24 on PostgreSQL holds a connection of
# its pool of 50 for each update of a command until the command ends, and hangs for good when
# every connection is held by commands waiting for another (kit's UPDATES_PER_WRITE).
TOGETHER_AT_ONCE = 8
KEYS_HELD = 10_000  # patients' content keys kept in memory (32 bytes each)
# A dossier's documents are listed in this many records, each one record of MongoDB (16 MB
# at most) rewritten by every change of one of its documents; a document's metadata takes
# ~350 bytes.
LISTINGS = 32
DOCUMENTS_PER_LISTING = 10_000
# A listing's field counting its documents (since 2026-12-06: `appended`).
LISTED = "listed"
# Listings' stored bytes whose decoded documents are kept for reads (the documents take about
# four times as much memory again): a dossier of 200 documents is 70 kB.
DECODED_BYTES = 8 * 1024 * 1024
# Consent's changes of this dossier, in its record: {"epoch": str, "changing": {id: until}}.
CONSENT_MARK = "consent_mark"
# How long a change consent began holds the epoch back if consent never says it ended (it
# died in between): well past any consent write's deadline.
CONSENT_CHANGE_SECONDS = 60
# The fields of a dossier's record a new document is admitted on (consent's context of the
# dossier, and its content key): a change of any of them is fenced (`DossierStore._fence`),
# and they are all a submission keeps of the record it was decided on (`add_document`).
DECIDING = ("opened_at", "status", "legal_representatives", CONSENT_MARK)
# In a record whose DECIDING fields changed, until its listings are fenced: a mark, the time
# it was made (Unix seconds) and random bytes. A read of the record fences for a mark older
# than FENCE_LATE_SECONDS: its writer died before its fence, since a fence takes milliseconds
# (up to a lease's wait, 10 s, on a contended listing); a younger one is its writer's to fence
# (its change is not answered before), so that reads in the meantime do not each fence too.
FENCING = "fencing"
FENCE_LATE_SECONDS = 15.0
# Listings' versions this process wrote with the record (its DECIDING fields) the write was
# decided on, that a next submission decides on without reading it (`add_document`).
DECIDED_HELD = 50_000

log = get_logger(__name__)


@dataclass
class NewDocument:
    """A document to write: its entry, its sealed content, its events, and the version it
    replaces (as read)."""

    doc: Document
    content_sealed: bytes
    events: tuple[envelope_pb2.Envelope, ...] = ()
    supersedes: Document | None = None


class RecordChanged(Exception):
    """The dossier's record is no longer the one a submission was decided on: `record` is the
    record read (its DECIDING fields) if no fence of it is due, else it is to be read again."""

    def __init__(self, record: Document | None = None) -> None:
        super().__init__("the dossier's record changed")
        self.record = record


# What a submission decided on a record kept may be refused for (consent's verdict, the
# directory's answer): decided again on the record read. Not an outage: it is not asked twice.
REFUSALS = (PermissionDenied, NotFound, Conflict, InvalidArgument)


# A listing's version and stamp, as read or written (None: no listing).
At = tuple[Any, Any] | None


class DossierStore(Store):
    def __init__(self, db: Any, remember_records: bool = True) -> None:
        """`remember_records`: a submission may decide on the record a listing's last write
        was decided on (`add_document`); off, it reads the record every time."""
        super().__init__(db)
        self._remember_records = remember_records
        # What this process holds of patients is emptied every few minutes (dmp_kit.forget):
        # a dossier another replica purged leaves this one's memory too.
        self._keys: LRUCache[tuple[str, datetime], bytes] = patient_data(LRUCache(KEYS_HELD))
        # Listings decoded, by their dossier and stored bytes (what changes with every change
        # of them), each counted as the size of those bytes.
        self._decoded: LRUCache[tuple[str, bytes], tuple[int, list[Document]]] = patient_data(
            LRUCache(DECODED_BYTES, getsizeof=lambda held: held[0])
        )
        # By listing: the version and stamp of it this process wrote, and the record (its
        # DECIDING fields) that write was decided on.
        self._decided: LRUCache[str, tuple[At, Document]] = patient_data(LRUCache(DECIDED_HELD))
        self._together = 0  # submissions writing their content with their listing now

    @cached_property
    def dossiers(self) -> Any:
        return self.db["dossiers"]

    @cached_property
    def listings(self) -> Any:
        """A dossier's listings live beside its record, in `dossiers` (`_id` `<ins>:<nn>`,
        `ins`): one query reads the record and its documents' metadata together."""
        return self.db["dossiers"]

    @cached_property
    def former_listings(self) -> Any:
        """Listings as stored before they moved beside their dossier's record: folded at
        start."""
        return self.db["listings"]

    @cached_property
    def legacy_documents(self) -> Any:
        """Documents as stored before listings, one record each: folded at start."""
        return self.db["documents"]

    @cached_property
    def chunks(self) -> Any:
        return self.db["chunks"]

    @cached_property
    def keys(self) -> Any:
        return self.db["data_keys"]

    @cached_property
    def openings(self) -> Any:
        return self.db["openings"]

    @cached_property
    def measurements(self) -> Any:
        """One record per (patient, kind): `points`, the series, read by its `_id`."""
        return self.db["measurements"]

    @cached_property
    def exports(self) -> Any:
        """Patients' exports of their data: state and progress (no content)."""
        return self.db["exports"]

    @cached_property
    def export_parts(self) -> Any:
        """The exports' archives, sealed, in parts."""
        return self.db["export_parts"]

    @cached_property
    def export_slots(self) -> Any:
        """One record per patient with an export under way: one at a time."""
        return self.db["export_slots"]

    async def ensure_indexes(self) -> None:
        await self.chunks.create_index([("doc_id", ASCENDING), ("n", ASCENDING)])
        await self.listings.create_index("ins")
        await self.listings.create_index("hiding")  # the scheduled rules' hidden documents
        await self.dossiers.create_index(CONTENT_OF, sparse=True)  # a purge's content
        await self.openings.create_index("opener")
        await self.dossiers.create_index([("status", ASCENDING), ("purge_after", ASCENDING)])
        await self.exports.create_index("ins")
        await self.exports.create_index("status")
        await self.export_parts.create_index("export_id")
        await self.fold_listings()  # first: the documents' fold writes where listings now are
        await self.fold_documents()

    # dossiers ------------------------------------------------------------------------

    async def get_dossier(self, ins: str) -> Document | None:
        doc = await self._read_record(ins)
        await self._fence_if_late(ins, doc)
        return doc

    async def _read_record(self, ins: str) -> Document | None:
        """The dossier's record as stored, without its outbox (and without fencing)."""
        doc: Document | None = await self.dossiers.find_one({"_id": ins}, {OUTBOX: 0})
        return doc

    async def dossier_and_documents(
        self, ins: str, shared: bool = False
    ) -> tuple[Document | None, list[Document]]:
        """The dossier's record and every one of its documents (newest first), in one query:
        the record and its listings share `ins`. A record from before it carried `ins` is read
        by `_id` and given it, once. `shared`: the documents may be those decoded for another
        request from the same stored bytes, for a caller that only reads them."""
        dossier: Document | None = None
        docs: list[Document] = []
        async for found in self.dossiers.find(of_dossier_and_listings(ins), {OUTBOX: 0}):
            if found["_id"] == ins:
                dossier = found
            elif shared and "docs" in found:
                stored = bytes(found["docs"])
                held = self._decoded.get((ins, stored))
                if held is None:
                    held = (len(stored), listing_entries(found))
                    self._decoded[(ins, stored)] = held
                docs += held[1]
            else:
                docs += listing_entries(found)
        if dossier is None:
            dossier = await self.get_dossier(ins)
            if dossier is not None:
                await self.change_dossier(
                    ins, lambda d: {"ins": ins} if d and "ins" not in d else None
                )
        else:
            await self._fence_if_late(ins, dossier)
        return dossier, newest_first(docs)

    async def mark_consent_change(
        self, ins: str, change_id: str, done: bool, now: datetime
    ) -> None:
        """Consent begins or ends a change of this dossier's consent: the epoch is new either
        way, and stands only once no change begun is under way (`consent_epoch`). Not a
        change of the dossier's own data: its version is left alone, so no write of dossier
        conflicts with it. No record, nothing to mark: a dossier opened later starts without
        an epoch."""
        fencing = new_mark()
        async with document_locks.hold(self.dossiers.name, ins):
            if not await self._mark_consent_change(ins, change_id, done, now, fencing):
                return
        await self._fence(ins, fencing)

    async def _mark_consent_change(
        self, ins: str, change_id: str, done: bool, now: datetime, fencing: str
    ) -> bool:
        """The mark written (under the record's lock); False if there is no record."""
        record = await self.dossiers.find_one({"_id": ins}, {f"{CONSENT_MARK}.changing": 1})
        if record is None:
            return False
        changing = (record.get(CONSENT_MARK) or {}).get("changing") or {}
        # Entries that lapsed (changes never said ended) go, so that none piles up.
        lapsed = {f"{CONSENT_MARK}.changing.{i}": "" for i, t in changing.items() if t <= now}
        epoch = {f"{CONSENT_MARK}.epoch": os.urandom(16).hex(), FENCING: fencing}
        entry = f"{CONSENT_MARK}.changing.{change_id}"
        if done:
            update: Document = {"$set": epoch, "$unset": {**lapsed, entry: ""}}
        else:
            until = now + timedelta(seconds=CONSENT_CHANGE_SECONDS)
            update = {"$set": {**epoch, entry: until}}
            lapsed.pop(entry, None)
            if lapsed:
                update["$unset"] = lapsed
        await self.dossiers.update_one({"_id": ins}, update)
        return True

    async def insert_dossier(self, doc: Document, *events: envelope_pb2.Envelope) -> None:
        doc = {**doc, "ins": doc["_id"]}  # read with its listings by `ins`
        try:
            await self.dossiers.insert_one(new_document_with_events(doc, *events))
        except DuplicateKeyError as exc:
            raise AlreadyExists(
                "a DMP is already open for this INS", field="ins", slug="dossier-exists"
            ) from exc

    async def change_dossier(
        self, ins: str, fields: Change, *events: envelope_pb2.Envelope
    ) -> Document | None:
        """A change of the record; one of its DECIDING fields is fenced before this returns,
        marked in the same write until then (see `_fence`)."""
        fencing = new_mark()
        deciding = False
        left = ""  # a mark a change before left, its fence never done

        def marked(current: Document | None) -> Document | None:
            nonlocal deciding, left
            change = fields(current)
            deciding = change is not None and any(key in DECIDING for key in change)
            left = str((current or {}).get(FENCING, ""))
            return {**change, FENCING: fencing} if change is not None and deciding else change

        written = await change_document(self.dossiers, ins, marked, *events)
        if written is not None and (deciding or left):
            await self._fence(ins, fencing if deciding else left)
            written.pop(FENCING, None)
        return written

    async def _fence_if_late(self, ins: str, record: Document | None) -> None:
        """The fence of a change whose writer died before it (its mark late), if any."""
        if record is not None and _late(record):
            await self._fence(ins, record[FENCING])

    async def _fence(self, ins: str, fencing: str) -> None:
        """After a change of a record's DECIDING fields, before it is answered: every listing
        of the dossier gets a new version, so that no submission decided on the record as it
        was before lands without reading it again (`add_document`); then the record's mark
        goes (unless a later change marked it again). A change whose process died before its
        fence leaves its mark: the next read of the record, or change of it, fences. Listings
        made since need none: none is kept that a fence did not reach (`add_document`)."""
        # Under each listing's lock, and the record's for its mark, as every writer of them:
        # FerretDB writes a whole document back for an update, so an update beside another
        # writer's would undo one of the two (kit's DocumentLocks).
        ids = [found["_id"] async for found in self.listings.find(of_dossier(ins), {"_id": 1})]
        if ids:
            async with document_locks.hold_all(self.listings.name, ids):
                await self.listings.update_many(
                    {"ins": ins, "_id": {"$in": ids}}, {"$inc": {VERSION: 1}}
                )
        async with document_locks.hold(self.dossiers.name, ins):
            await self.dossiers.update_one(
                {"_id": ins, FENCING: fencing}, {"$unset": {FENCING: ""}}
            )

    async def drop_representatives(self, ins: str, former: frozenset[str]) -> None:
        """A minor came of age: `former` no longer act for them (idempotent; no dossier, no
        copy to change). The representatives are never added back, so the order of events
        does not matter."""

        def fields(current: Document | None) -> Document | None:
            if current is None:
                return None
            held = current.get("legal_representatives", [])
            kept = [rep for rep in held if rep not in former]
            return None if kept == held else {"legal_representatives": kept}

        await self.change_dossier(ins, fields)

    async def record_opening(
        self, event_id: str, opener: str, kind: str, profession: str, at: datetime
    ) -> None:
        # One record per opening (insert only): counted by aggregation, never lost.
        await self.openings.insert_one(
            {"_id": event_id, "opener": opener, "kind": kind, "profession": profession, "at": at}
        )

    async def count_openings(self, kind: str, profession: str) -> list[Document]:
        match: Document = {}
        if kind:
            match["kind"] = kind
        if profession:
            match["profession"] = profession
        cursor = await self.openings.aggregate(
            [
                {"$match": match},
                {
                    "$group": {
                        "_id": {"opener": "$opener", "kind": "$kind", "profession": "$profession"},
                        "count": {"$sum": 1},
                    }
                },
                {"$sort": {"count": -1}},
            ]
        )
        return [doc async for doc in cursor]

    # measurements ----------------------------------------------------------------------

    async def measurement_series(self, ins: str, kinds: list[str]) -> dict[str, list[Document]]:
        """The series of these kinds, each read by its `_id` (a key lookup on every server)."""
        found: dict[str, list[Document]] = {}
        for kind in kinds:
            record = await self.measurements.find_one({"_id": series_id(ins, kind)}, {"points": 1})
            found[kind] = list((record or {}).get("points", []))
        return found

    async def change_series(
        self, ins: str, kind: str, fields: Change, *events: envelope_pb2.Envelope
    ) -> Document | None:
        return await change_document(
            self.measurements, series_id(ins, kind), fields, *events, create=True
        )

    # documents -------------------------------------------------------------------------
    #
    # A dossier's documents are listed in a few records, `listings`, each holding the
    # metadata of its documents as a single binary value (their BSON one after the other, which
    # this service decodes itself, and to which a new document's is appended: `adding`):
    # a page is read as a few values instead of one record per document (FerretDB converts,
    # filters and sorts every record a query matches, in Go: 200 records cost it ten times
    # one value holding them). A document belongs to one of LISTINGS records by its id — a
    # new version to the record of the one it replaces — so a change rewrites a small part
    # of the dossier's metadata. Every change of a document is one update of its record, with
    # its events (the outbox): a listing is never stale, and a new version and the one it
    # supersedes change together. The content stays apart, in `chunks`. `hiding` names the
    # hiding labels some current document of the record carries: the scheduled rules read
    # only those records.

    async def documents_of(self, ins: str) -> list[Document]:
        """Every document of the dossier (any status), newest first."""
        return newest_first(
            [
                doc
                async for listing in self.listings.find(of_dossier(ins), {"docs": 1})
                for doc in listing_entries(listing)
            ]
        )

    async def get_document(self, ins: str, doc_id: str) -> Document | None:
        return find_document(await self.documents_of(ins), doc_id)

    async def insert_document(
        self,
        doc: Document,
        content_sealed: bytes,
        *events: envelope_pb2.Envelope,
        supersedes: Document | None = None,
    ) -> str:
        """One new document (see insert_documents); returns its listing's id."""
        written = await self.insert_documents(
            [NewDocument(doc, content_sealed, events, supersedes)]
        )
        return written[0]

    async def insert_documents(self, new: list[NewDocument]) -> list[str]:
        """Chunks first, the listings last: a listing's update is the commit point (chunks no
        listing names are never read). A new version goes to the listing of the one it
        replaces, marked superseded in the same update; the other documents join the first
        of those listings (or the first document's own), so a submission is one update unless
        it replaces documents held in different listings: then one update per listing, in
        order. Returns the listings' ids, written in that order."""
        ins = new[0].doc["ins"]
        for item in new:
            await self._insert_content(item)
        first = next((i.supersedes["listing"] for i in new if i.supersedes), None)
        groups: dict[int, list[NewDocument]] = {}
        for item in new:
            listing = (
                item.supersedes["listing"]
                if item.supersedes
                else first
                if first is not None
                else listing_of(new[0].doc["_id"])
            )
            item.doc["listing"] = listing
            groups.setdefault(listing, []).append(item)
        written: list[str] = []
        for listing, items in groups.items():
            record = listing_id(ins, listing)
            try:
                await change_document(
                    self.listings,
                    record,
                    adding(ins, items),
                    *(e for i in items for e in i.events),
                    create=True,
                    remember=True,
                )
            except Conflict:
                # Refused (a full dossier, a duplicate, contention): these listings were
                # certainly not written, so the chunks no listing names go too, as far as the
                # database lets (a purge would not find them). Any other failure may have come
                # after the write: they stay.
                await self._drop_content(
                    [i for i in new if listing_id(ins, i.doc["listing"]) not in written]
                )
                raise
            written.append(record)
        return written

    async def add_document(
        self,
        ins: str,
        doc: Document,
        decide: Callable[[Document | None], Awaitable[NewDocument]],
    ) -> str:
        """A new document (not a new version) written to its listing; `decide` admits it on
        the dossier's record (its DECIDING fields; None: no dossier) and seals its content.
        Returns its listing's id.

        When this process last wrote that listing, the record that write was decided on is
        decided on again without reading either: the write lands only if the listing is still
        the version written (kit's `change_document(remember=True)`), and every change of the
        record's DECIDING fields gives every listing a new version before it is answered
        (`_fence`). So a submission lands only on a record no acknowledged change has
        replaced; one decided on an older record is decided again on the record as it is.
        Otherwise the listing is read, then the record: a fence the record predates comes
        after that read, and the write guarded by it does not land."""
        listing = listing_of(doc["_id"])
        record_id = listing_id(ins, listing)
        name = self.listings.full_name
        held = self._decided.get(record_id)
        copy = written_documents.get(name, record_id)
        item: NewDocument | None = None
        first: Any = UNREAD
        if (
            self._remember_records
            and held is not None
            and copy is not None
            and written_version(copy) == held[0]
            and written_documents.worth_guessing(name)
        ):
            at, record = held
            with contextlib.suppress(*REFUSALS):  # refused on the record kept: read it again
                item = await decide(record)
        if item is None:
            first = await self.listings.find_one({"_id": record_id})
            at, record = written_version(first), deciding(await self.get_dossier(ins))
            item = await decide(record)
        for _ in range(MAX_ATTEMPTS):
            item.doc["listing"] = listing
            base: list[Document | None] = []
            # Whether a write of the listing naming the document was sent: it may have landed
            # (its answer lost), and then the content must stay.
            sent: list[bool] = []

            def added(
                current: Document | None,
                item: NewDocument = item,
                base: list[Document | None] = base,
            ) -> Document:
                base[:] = [current]
                return adding(ins, [item])(current)

            async def decided_on_this_version(
                record: Document | None = record,
                at: At = at,
                base: list[Document | None] = base,
                sent: list[bool] = sent,
            ) -> None:
                """Before each write: the record was read after the listing's version the
                write is guarded by, or that version's write (this process's, since) was
                decided on the same record, or it is read again now."""
                since = self._decided.get(record_id)
                if written_version(base[0]) != at and since != (written_version(base[0]), record):
                    # Read without fencing: this holds the listing's lock, which a fence
                    # takes. A record marked late is decided on again once it is fenced.
                    again = await self._read_record(ins)
                    if again is None or _late(again):
                        raise RecordChanged()
                    if deciding(again) != record:
                        raise RecordChanged(deciding(again))
                sent.append(True)  # nothing more before the write is sent

            # The content in the listing's command when it is one chunk (most are) and few
            # others do so now: one round trip; else first, in a command of its own.
            content = content_chunks(item)
            together = len(content) == 1 and self._together < TOGETHER_AT_ONCE
            self._together += together
            try:
                if not together:
                    await self.dossiers.insert_many(content)
                written = await change_document(
                    self.listings,
                    record_id,
                    added,
                    *item.events,
                    create=True,
                    remember=True,
                    first=first,
                    before_write=decided_on_this_version,
                    beside=content if together else (),
                )
            except RecordChanged as changed:
                await self._drop_content([item])
                record = changed.record or deciding(await self.get_dossier(ins))
                at, first = MOVED, UNREAD
                item = await decide(record)
                continue
            except Conflict:
                await self._drop_content([item])
                raise
            except BaseException:
                # The database failing, a lease not obtained, the request cancelled: before any
                # write of the listing was sent, nothing names the content.
                if not sent:
                    await self._drop_content([item])
                raise
            finally:
                self._together -= together
            if base[0] is not None:  # created: no fence reached it before, nothing to keep
                assert written is not None
                self._decided[record_id] = (written_version(written), record)
            return record_id
        raise Conflict("the dossier is being changed by others; try again", slug="contention")

    async def _insert_content(self, item: NewDocument) -> None:
        await self.dossiers.insert_many(content_chunks(item))

    async def _drop_content(self, items: list[NewDocument]) -> None:
        """The content of documents certainly not written, as far as the database lets (a
        purge takes what is left)."""
        with contextlib.suppress(PyMongoError):
            for item in items:  # an equality each: FerretDB reads `$in` whole
                for n in range(int(item.doc.get("chunks", 0))):
                    await self.dossiers.delete_one(
                        {"_id": content_id(item.doc["ins"], item.doc["_id"], n)}
                    )

    async def change_document_record(
        self, doc: Document, fields: Change, *events: envelope_pb2.Envelope
    ) -> Document | None:
        """A change of `doc` (as read: `fields` as for `change_document`, given the document
        as it is now), with its events; the document as written, None if it is gone."""
        written: list[Document] = []

        def changed(current: Document | None) -> Document | None:
            docs = listing_entries(current)
            for i, d in enumerate(docs):
                if d["_id"] == doc["_id"]:
                    new = fields(d)
                    written[:] = [{**d, **(new or {})}]
                    if new is None:
                        return None
                    docs[i] = written[0]
                    return listing_fields(doc["ins"], docs)
            written.clear()
            return None

        await change_document(
            self.listings,
            listing_id(doc["ins"], doc["listing"]),
            changed,
            *events,
            remember=True,
        )
        return written[0] if written else None

    async def read_content(self, doc: Document) -> bytes:
        """The chunks by their `_id`: a key lookup on every server (FerretDB scans a
        collection for any other filter, and these hold every document's content)."""
        if "chunks" not in doc:  # written before the count was recorded
            cursor = self.chunks.find({"doc_id": doc["_id"]}).sort("n", ASCENDING)
            return b"".join([bytes(c["data"]) async for c in cursor])
        pieces = []
        for n in range(int(doc["chunks"])):
            if doc.get(BESIDE):
                chunk = await self.dossiers.find_one({"_id": content_id(doc["ins"], doc["_id"], n)})
            else:  # `doc_id` too: the content's shard key (docs/scaling.md), one shard per read
                query = {"_id": f"{doc['_id']}:{n}", "doc_id": doc["_id"]}
                chunk = await self.chunks.find_one(query)
            if chunk is None:
                raise RuntimeError(f"document {doc['_id']}: chunk {n} is missing")
            pieces.append(bytes(chunk["data"]))
        return b"".join(pieces)

    async def fold_listings(self) -> int:
        """Moves the listings stored in their own collection (before they moved beside their
        dossier's record) into `dossiers`, as they are (pending events, version); run at
        start. Safe to cut short and run again. Where the listing is already there (moved
        before a cut, or written meanwhile by a request this replica answered), the documents
        and pending events it lacks are merged into it: none is dropped."""
        moved = 0
        while docs := [d async for d in self.former_listings.find({}).limit(100)]:
            for doc in docs:  # one at a time: a listing may hold megabytes
                if not await insert_once(self.listings, doc):
                    await self._merge_into_listing(
                        doc["ins"],
                        doc["_id"],
                        listing_entries(doc),
                        [
                            envelope_pb2.Envelope.FromString(bytes(entry["data"]))
                            for entry in doc.get(OUTBOX) or []
                        ],
                    )
                await self.former_listings.delete_one({"_id": doc["_id"]})
            moved += len(docs)
        if moved:
            log.info("listings_moved_beside_their_dossiers", listings=moved)
        return moved

    async def _merge_into_listing(
        self,
        ins: str,
        record: str,
        found: list[Document],
        events: list[envelope_pb2.Envelope],
    ) -> None:
        """The documents of `found` the listing `record` lacks, added to it with `events`
        (an event already published is dropped by JetStream or by its idempotent consumers)."""

        def merged(current: Document | None) -> Document:
            docs = listing_entries(current)
            listed = {d["_id"] for d in docs}
            return listing_fields(ins, [*docs, *(d for d in found if d["_id"] not in listed)])

        await change_document(self.listings, record, merged, *events, create=True)

    async def fold_documents(self) -> int:
        """Moves documents stored one record each (before listings) into their dossiers'
        listings, with their pending events; run at start. Safe to cut short and run again:
        a document already listed is kept as listed, and an event published twice is dropped
        by JetStream (its id) or by consumers (idempotent)."""
        moved = 0
        while (first := await self.legacy_documents.find_one({}, {"ins": 1})) is not None:
            ins = first["ins"]
            old = [d async for d in self.legacy_documents.find({"ins": ins})]
            by_listing: dict[int, list[Document]] = {}
            for d in old:
                by_listing.setdefault(listing_of(d["_id"]), []).append(d)
            for listing, docs in by_listing.items():
                events = [
                    envelope_pb2.Envelope.FromString(bytes(entry["data"]))
                    for d in docs
                    for entry in d.get(OUTBOX) or []
                ]
                found = [
                    {
                        **{k: v for k, v in d.items() if k not in (OUTBOX, PENDING, VERSION)},
                        "listing": listing,
                    }
                    for d in docs
                ]
                await self._merge_into_listing(ins, listing_id(ins, listing), found, events)
            await self.legacy_documents.delete_many({"ins": ins})
            moved += len(old)
        if moved:
            log.info("documents_folded_into_listings", documents=moved)
        return moved

    # per-patient data keys ----------------------------------------------------------------

    async def data_key(self, ins: str, master: bytes, dossier: Document) -> bytes:
        """The patient's content key, created on first use, kept sealed under the master key.

        Kept unsealed in memory for the dossier it was read for (a key never changes while its
        dossier lives): a purge deletes both, and a dossier opened again after one is another
        (its `opened_at`), so no replica can use a purged key for new content."""
        held = (ins, dossier["opened_at"])
        if (key := self._keys.get(held)) is not None:
            return key
        found = await self.keys.find_one({"_id": ins})
        if found is None:
            key = os.urandom(32)
            try:
                await self.keys.insert_one({"_id": ins, "sealed": seal(master, key, ins.encode())})
            except DuplicateKeyError:
                found = await self.keys.find_one({"_id": ins})
        if found is not None:
            key = unseal(master, bytes(found["sealed"]), ins.encode())
        self._keys[held] = key
        return key

    # scheduled rules ---------------------------------------------------------------------

    async def hidden_documents(
        self, created_before: datetime, reminded: bool | None
    ) -> list[Document]:
        """Current documents carrying a hiding label, written before `created_before`: read
        from the listings that name the label in `hiding` (an equality, served by its index
        on every server), one query per label."""
        found: dict[str, Document] = {}
        for label in domain.HIDING_LABELS:
            async for listing in self.listings.find({"hiding": label}, {"docs": 1}).limit(500):
                for doc in listing_entries(listing):
                    if (
                        label in doc.get("labels", [])
                        and doc["status"] in CURRENT
                        and doc["created_at"] <= created_before
                        and (reminded is None or doc.get("reminded", False) == reminded)
                    ):
                        found.setdefault(doc["_id"], doc)
        return list(found.values())[:500]

    async def due_for_purge(self, now: datetime) -> list[Document]:
        """One query per status, an equality served by its index (open dossiers, nearly all
        of them, are not read)."""
        due: list[Document] = []
        for status in ("deletion_requested", "closed"):
            cursor = self.dossiers.find(
                {"status": status, "purge_after": {"$lte": now}}, {"outbox": 0}
            ).limit(100)
            due += [doc async for doc in cursor]
        return due[:100]

    # exports of a patient's data ---------------------------------------------------------

    async def take_export_slot(self, ins: str, export_id: str) -> bool:
        """The patient's one slot for an export under way; False: another one holds it."""
        held = await self.export_slots.find_one({"_id": ins})
        if held is not None:
            other = await self.exports.find_one({"_id": held["export_id"]}, {"status": 1})
            if other is not None and other["status"] in ("pending", "running"):
                return False
            await self.export_slots.delete_one({"_id": ins, "export_id": held["export_id"]})
        try:
            await self.export_slots.insert_one({"_id": ins, "export_id": export_id})
        except DuplicateKeyError:
            return False
        return True

    async def free_export_slot(self, ins: str, export_id: str) -> None:
        await self.export_slots.delete_one({"_id": ins, "export_id": export_id})

    async def insert_export(self, doc: Document, *events: envelope_pb2.Envelope) -> None:
        await self.exports.insert_one(new_document_with_events(doc, *events))

    async def exports_of(self, ins: str) -> list[Document]:
        """The patient's exports, newest first."""
        cursor = self.exports.find({"ins": ins}, EXPORT_FIELDS)
        return newest_first([doc async for doc in cursor])

    async def get_export(self, export_id: str) -> Document | None:
        doc: Document | None = await self.exports.find_one({"_id": export_id}, {OUTBOX: 0})
        return doc

    async def change_export(self, export_id: str, fields: Change) -> Document | None:
        return await change_document(self.exports, export_id, fields)

    async def exports_in(self, status: str, limit: int = 100) -> list[Document]:
        """Exports in one status (an equality, served by its index)."""
        cursor = self.exports.find({"status": status}, EXPORT_FIELDS).limit(limit)
        return [doc async for doc in cursor]

    async def put_export_part(self, export_id: str, attempt: int, n: int, sealed: bytes) -> None:
        await self.export_parts.replace_one(
            {"_id": f"{export_id}:{attempt}:{n}"},
            {"export_id": export_id, "attempt": attempt, "n": n, "data": sealed},
            upsert=True,
        )

    async def export_part(self, export_id: str, attempt: int, n: int) -> bytes | None:
        found = await self.export_parts.find_one({"_id": f"{export_id}:{attempt}:{n}"})
        return None if found is None else bytes(found["data"])

    async def drop_export_parts(self, export_id: str, keep_attempt: int | None = None) -> None:
        """An export's parts, all of them or those of other attempts than `keep_attempt`."""
        query: Document = {"export_id": export_id}
        if keep_attempt is not None:
            query["attempt"] = {"$ne": keep_attempt}
        await self.export_parts.delete_many(query)

    async def purge_exports(self, ins: str) -> None:
        async for doc in self.exports.find({"ins": ins}, {"_id": 1}):
            await self.export_parts.delete_many({"export_id": doc["_id"]})
        await self.exports.delete_many({"ins": ins})
        await self.export_slots.delete_many({"_id": ins})

    async def purge(self, ins: str) -> None:
        """The key first (the content is unreadable from then on), then the rest; nothing of
        the dossier kept in this process's memory either."""
        for held in [held for held in self._keys if held[0] == ins]:
            del self._keys[held]
        for decoded in [decoded for decoded in self._decoded if decoded[0] == ins]:
            del self._decoded[decoded]
        for n in range(LISTINGS):
            written_documents.forget(self.listings.full_name, listing_id(ins, n))
            self._decided.pop(listing_id(ins, n), None)
        await self.keys.delete_one({"_id": ins})
        await self.purge_exports(ins)
        for doc in await self.documents_of(ins):
            if not doc.get(BESIDE):  # an equality each: `$in` would read every chunk on FerretDB
                await self.chunks.delete_many({"doc_id": doc["_id"]})
        # Every chunk beside the record, those of submissions that failed midway too.
        await self.dossiers.delete_many(of_content(ins))
        await self.listings.delete_many(of_dossier(ins))
        for kind in domain.MEASUREMENT_KINDS:
            await self.measurements.delete_one({"_id": series_id(ins, kind)})
        await self.dossiers.delete_one({"_id": ins})


CURRENT = ("approved", "archived")
# An export's record without its outbox nor what its build needs (sealed identity, ids).
EXPORT_FIELDS = {OUTBOX: 0, "identity": 0, "documents": 0, "readable": 0}
# Aware datetimes in bson's own UTC, as the client decodes: asking for `datetime.UTC` instead
# converts each one in Python (a dossier's 200 listed documents: 0.54 ms to decode, not 0.41).
CODEC: CodecOptions[Document] = CodecOptions(tz_aware=True)


def listing_entries(listing: Document | None) -> list[Document]:
    """A listing's documents, decoded. `docs` holds each document's BSON, one after the other,
    so that a new document is added without decoding or encoding the others (`adding`). A
    listing last written before 2026-12-06 holds one BSON document instead, `{"d": [the
    documents]}` (it has no `_id`, as every document has): read as such, and written the new
    way at its next change."""
    if listing is None or "docs" not in listing:
        return []
    docs: list[Document] = bson.decode_all(bytes(listing["docs"]), CODEC)
    if len(docs) == 1 and "_id" not in docs[0]:
        return list(docs[0]["d"])
    return docs


def content_chunks(item: NewDocument) -> list[Document]:
    """A new document's content as stored: its sealed bytes in chunks beside its dossier's
    record (the document's entry notes how many, and where)."""
    doc, sealed = item.doc, item.content_sealed
    pieces = [sealed[i : i + CHUNK_BYTES] for i in range(0, len(sealed), CHUNK_BYTES)]
    doc["chunks"], doc[BESIDE] = len(pieces), True
    return [
        {"_id": content_id(doc["ins"], doc["_id"], n), CONTENT_OF: doc["ins"], "data": Binary(p)}
        for n, p in enumerate(pieces)
    ]


def content_id(ins: str, doc_id: str, n: int) -> str:
    """A content chunk's `_id` in `dossiers`: `<ins>;<document>:<n>`, just past the range of
    the dossier's record and listings (`[ins, ins;)`, which their queries name), so that a
    dossier's content is stored next to it on a ranged shard key (docs/scaling.md)."""
    return f"{ins};{doc_id}:{n}"


def of_content(ins: str) -> dict[str, Any]:
    """The filter of a dossier's content chunks: by CONTENT_OF (indexed, for FerretDB) and by
    the range of their `_id`s (for a ranged shard key)."""
    return {CONTENT_OF: ins, "_id": {"$gte": f"{ins};", "$lt": f"{ins}<"}}


def series_id(ins: str, kind: str) -> str:
    return f"{ins}:{kind}"


def listing_of(doc_id: str) -> int:
    """The listing a new document (not a new version) belongs to."""
    return zlib.crc32(doc_id.encode()) % LISTINGS


def listing_id(ins: str, listing: int) -> str:
    return f"{ins}:{listing:02d}"


def of_dossier(ins: str) -> dict[str, Any]:
    """The filter of a dossier's listings: by `ins` (indexed, and what FerretDB pushes down to
    its database) and by the range of their `_id`s (`<ins>:00`…), which a ranged `_id` shard
    key sends to one shard (docs/scaling.md)."""
    return {"ins": ins, "_id": {"$gte": f"{ins}:", "$lt": f"{ins};"}}


def newest_first(docs: list[Document]) -> list[Document]:
    """Records newest first (`created_at`, then `_id` within the same time), sorted in place."""
    docs.sort(key=lambda d: (d["created_at"], d["_id"]), reverse=True)
    return docs


def consent_epoch(dossier: Document | None, now: datetime) -> str:
    """The epoch under which consent may reuse a state of this dossier's consent it read
    before: none while a change begun less than CONSENT_CHANGE_SECONDS ago has not ended."""
    mark = (dossier or {}).get(CONSENT_MARK) or {}
    if any(until > now for until in (mark.get("changing") or {}).values()):
        return ""
    return str(mark.get("epoch", ""))


def of_dossier_and_listings(ins: str) -> dict[str, Any]:
    """The filter of a dossier's record (`_id` = INS) and its listings (`<ins>:<nn>`)."""
    return {"ins": ins, "_id": {"$gte": ins, "$lt": f"{ins};"}}


def listing_fields(ins: str, docs: list[Document]) -> Document:
    """The fields of a listing of the dossier `ins` holding `docs`: their BSON one after the
    other (`listing_entries`), how many they are, and the hiding labels current ones carry."""
    return {
        "ins": ins,
        "docs": Binary(b"".join([bson.encode(d) for d in docs])),
        LISTED: len(docs),
        "hiding": hiding_labels(docs),
    }


def hiding_labels(docs: list[Document]) -> list[str]:
    """The hiding labels some current document of `docs` carries."""
    return sorted(
        {
            label
            for d in docs
            if d["status"] in CURRENT
            for label in d.get("labels", [])
            if label in domain.HIDING_LABELS
        }
    )


def appended(ins: str, current: Document, docs: list[Document]) -> Document | None:
    """The fields of the listing `current` with new documents `docs` added, without decoding
    the documents it holds: their BSON is kept as stored, theirs follows it. None when it
    cannot be done so: the listing is in the earlier layout (it has no count), or it would
    hold too many, or a new document has a unique id (the listing's are checked first)."""
    listed = current.get(LISTED)
    if not isinstance(listed, int) or listed + len(docs) > DOCUMENTS_PER_LISTING:
        return None
    if any(unique_id(d) for d in docs):
        return None
    return {
        "ins": ins,
        "docs": Binary(bytes(current["docs"]) + b"".join([bson.encode(d) for d in docs])),
        LISTED: listed + len(docs),
        "hiding": sorted({*current.get("hiding", []), *hiding_labels(docs)}),
    }


def adding(ins: str, items: list[NewDocument]) -> Change:
    """The change of a listing of the dossier `ins` that adds `items` (new versions marking
    the ones they replace superseded)."""

    def added(current: Document | None) -> Document:
        if current is not None and not any(i.supersedes for i in items):
            fields = appended(ins, current, [i.doc for i in items])
            if fields is not None:
                return fields
        docs = listing_entries(current)
        if len(docs) + len(items) > DOCUMENTS_PER_LISTING:
            raise Conflict(
                f"a dossier holds at most about {LISTINGS * DOCUMENTS_PER_LISTING} documents",
                slug="dossier-full",
            )
        held = {(d["author"], unique_id(d)) for d in docs if unique_id(d)}
        if any((i.doc["author"], unique_id(i.doc)) in held for i in items):
            raise Conflict(
                "the dossier already holds a document with this unique id",
                slug="duplicate-unique-id",
            )
        replaced = {i.supersedes["_id"]: i.doc["_id"] for i in items if i.supersedes}
        docs = [
            {**d, "status": "superseded", "replaced_by": replaced[d["_id"]]}
            if d["_id"] in replaced
            else d
            for d in docs
        ]
        return listing_fields(ins, [*(i.doc for i in items), *docs])

    return added


# Not the version of any listing: the record is read again before any write.
MOVED: At = (None, "moved")


def new_mark() -> str:
    """A record's mark until its change is fenced."""
    return f"{int(time.time())}:{os.urandom(8).hex()}"


def _late(record: Document) -> bool:
    """Whether the record holds a mark its writer should have fenced by now."""
    made, _, _ = str(record.get(FENCING, "")).partition(":")
    return made.isdigit() and time.time() - int(made) > FENCE_LATE_SECONDS


def deciding(record: Document | None) -> Document | None:
    """What a submission is decided on of the dossier's record."""
    if record is None:
        return None
    return {key: record[key] for key in ("_id", *DECIDING) if key in record}


def unique_id(doc: Document) -> str:
    """The submitter's unique id of a document, if it came with one."""
    return str((doc.get("context") or {}).get("unique_id", ""))


def find_document(docs: list[Document], doc_id: str) -> Document | None:
    return next((d for d in docs if d["_id"] == doc_id), None)


def current_documents(docs: list[Document]) -> list[Document]:
    return [d for d in docs if d["status"] in CURRENT]


def hidden_from_patient(docs: list[Document]) -> int:
    """How many current documents are hidden from the patient (rule 8's pending count)."""
    return sum(
        1 for d in current_documents(docs) if domain.HIDDEN_FROM_PATIENT in d.get("labels", [])
    )
