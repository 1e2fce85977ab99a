"""All of the dossier service's database access."""

from __future__ import annotations

import os
from collections import OrderedDict
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from dmp.events.v1 import envelope_pb2
from dmp_dossier import domain
from dmp_kit.crypto import seal, unseal
from dmp_kit.errors import AlreadyExists
from dmp_kit.mongo import Document, Store
from dmp_kit.outbox import Change, change_document, new_document_with_events

CHUNK_BYTES = 4 * 1024 * 1024  # documents are at most 16 MB in MongoDB; content is chunked
KEYS_HELD = 10_000  # patients' content keys kept in memory (32 bytes each)


class DossierStore(Store):
    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self._keys: OrderedDict[tuple[str, datetime], bytes] = OrderedDict()

    @property
    def dossiers(self) -> Any:
        return self.db["dossiers"]

    @property
    def documents(self) -> Any:
        return self.db["documents"]

    @property
    def chunks(self) -> Any:
        return self.db["chunks"]

    @property
    def keys(self) -> Any:
        return self.db["data_keys"]

    @property
    def openings(self) -> Any:
        return self.db["openings"]

    async def ensure_indexes(self) -> None:
        await self.documents.create_index(
            [("ins", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]
        )
        await self.chunks.create_index([("doc_id", ASCENDING), ("n", ASCENDING)])
        await self.documents.create_index("labels")  # the scheduled rules' hidden documents
        await self.openings.create_index("opener")
        await self.dossiers.create_index([("status", ASCENDING), ("purge_after", ASCENDING)])

    # dossiers ------------------------------------------------------------------------

    async def get_dossier(self, ins: str) -> Document | None:
        doc: Document | None = await self.dossiers.find_one({"_id": ins}, {"outbox": 0})
        return doc

    async def insert_dossier(self, doc: Document, *events: envelope_pb2.Envelope) -> None:
        try:
            await self.dossiers.insert_one(new_document_with_events(doc, *events))
        except DuplicateKeyError as exc:
            raise AlreadyExists(
                "a DMP is already open for this INS", field="ins", slug="dossier-exists"
            ) from exc

    async def change_dossier(
        self, ins: str, fields: Change, *events: envelope_pb2.Envelope
    ) -> Document | None:
        return await change_document(self.dossiers, ins, fields, *events)

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

    # documents -------------------------------------------------------------------------

    async def get_document(self, ins: str, doc_id: str) -> Document | None:
        doc: Document | None = await self.documents.find_one(
            {"_id": doc_id, "ins": ins}, {"outbox": 0}
        )
        return doc

    async def list_documents(
        self,
        query: Document,
        after: tuple[datetime, str] | None,
        limit: int,
        fields: Document | None = None,
    ) -> list[Document]:
        if after is not None:
            at, doc_id = after
            query = {
                **query,
                "$or": [{"created_at": {"$lt": at}}, {"created_at": at, "_id": {"$lt": doc_id}}],
            }
        cursor = (
            self.documents.find(query, fields or {"outbox": 0})
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
            .batch_size(limit)  # one round trip
        )
        return [doc async for doc in cursor]

    async def count_hidden_from_patient(self, ins: str) -> int:
        return await self.documents.count_documents(
            {
                "ins": ins,
                "labels": domain.HIDDEN_FROM_PATIENT,
                "status": {"$in": ["approved", "archived"]},
            }
        )

    async def document_refs(self, ins: str) -> list[Document]:
        """What an access decision needs of each current document of a dossier."""
        cursor = self.documents.find(
            {"ins": ins, "status": {"$in": ["approved", "archived"]}},
            {"type_code": 1, "section": 1, "author": 1, "labels": 1, "status": 1},
        )
        return [doc async for doc in cursor]

    async def get_documents(self, ins: str, ids: list[str]) -> list[Document]:
        cursor = self.documents.find({"_id": {"$in": ids}, "ins": ins}, {"outbox": 0})
        return [doc async for doc in cursor]

    async def insert_document(
        self, doc: Document, content_sealed: bytes, *events: envelope_pb2.Envelope
    ) -> None:
        """Chunks first, metadata last: the metadata insert is the commit point."""
        pieces = [
            content_sealed[i : i + CHUNK_BYTES] for i in range(0, len(content_sealed), CHUNK_BYTES)
        ]
        await self.chunks.insert_many(
            [
                {"_id": f"{doc['_id']}:{n}", "doc_id": doc["_id"], "n": n, "data": piece}
                for n, piece in enumerate(pieces)
            ]
        )
        await self.documents.insert_one(
            new_document_with_events({**doc, "chunks": len(pieces)}, *events)
        )

    async def read_content(self, doc: Document) -> bytes:
        """The chunks by their `_id`: a key lookup on every server (FerretDB scans a
        collection for any other filter, and this one holds every document's content)."""
        if "chunks" not in doc:  # written before the count was recorded
            cursor = self.chunks.find({"doc_id": doc["_id"]}).sort("n", ASCENDING)
            return b"".join([bytes(c["data"]) async for c in cursor])
        pieces = []
        for n in range(int(doc["chunks"])):
            chunk = await self.chunks.find_one({"_id": f"{doc['_id']}:{n}"})
            if chunk is None:
                raise RuntimeError(f"document {doc['_id']}: chunk {n} is missing")
            pieces.append(bytes(chunk["data"]))
        return b"".join(pieces)

    async def change_document_record(
        self, doc_id: str, fields: Change, *events: envelope_pb2.Envelope
    ) -> Document | None:
        return await change_document(self.documents, doc_id, fields, *events)

    # per-patient data keys ----------------------------------------------------------------

    async def data_key(self, ins: str, master: bytes, dossier: Document) -> bytes:
        """The patient's content key, created on first use, kept sealed under the master key.

        Kept unsealed in memory for the dossier it was read for (a key never changes while its
        dossier lives): a purge deletes both, and a dossier opened again after one is another
        (its `opened_at`), so no replica can use a purged key for new content."""
        held = (ins, dossier["opened_at"])
        if (key := self._keys.get(held)) is not None:
            self._keys.move_to_end(held)
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
        while len(self._keys) > KEYS_HELD:
            self._keys.popitem(last=False)
        return key

    # scheduled rules ---------------------------------------------------------------------

    async def hidden_documents(
        self, created_before: datetime, reminded: bool | None
    ) -> list[Document]:
        """Current documents carrying a hiding label, written before `created_before`. One
        query per label, each an equality on `labels`: served by its index on every server
        (FerretDB reads the whole collection for a `$in`, and this runs every minute)."""
        found: dict[str, Document] = {}
        for label in domain.HIDING_LABELS:
            query: Document = {
                "labels": label,
                "created_at": {"$lte": created_before},
                "status": {"$in": ["approved", "archived"]},
            }
            if reminded is not None:
                query["reminded"] = reminded
            async for doc in self.documents.find(query, {"outbox": 0}).limit(500):
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

    async def purge(self, ins: str) -> None:
        """The key first (the content is unreadable from then on), then the rest."""
        for held in [held for held in self._keys if held[0] == ins]:
            del self._keys[held]
        await self.keys.delete_one({"_id": ins})
        ids = [d["_id"] async for d in self.documents.find({"ins": ins}, {"_id": 1})]
        for doc_id in ids:  # an equality each: `$in` would read every chunk on FerretDB
            await self.chunks.delete_many({"doc_id": doc_id})
        await self.documents.delete_many({"ins": ins})
        await self.dossiers.delete_one({"_id": ins})
