"""The transactional outbox: events stored inside the changed document, relayed, then removed.

A store that changes a document and must publish writes, in the same single-document update,
the serialised envelope into the document's `outbox` array and sets `outbox_pending`. The relay
publishes pending entries with `Nats-Msg-Id` = event id (so a relay that dies between publish
and removal causes no duplicate), then removes exactly the entries it published with `$pullAll`
(exact values: portable to FerretDB, where `$pull` with a condition is not supported).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from bson import Binary
from pymongo.errors import DuplicateKeyError, PyMongoError

from dmp.events.v1 import envelope_pb2
from dmp_kit.bus import EventBus
from dmp_kit.errors import Conflict, Unavailable
from dmp_kit.logging import get_logger
from dmp_kit.mongo import Document, document_locks

log = get_logger(__name__)

OUTBOX = "outbox"
PENDING = "outbox_pending"


def outbox_entries(events: Sequence[envelope_pb2.Envelope]) -> list[Document]:
    return [{"id": e.id, "subject": e.type, "data": Binary(e.SerializeToString())} for e in events]


def with_events(update: Document, *events: envelope_pb2.Envelope) -> Document:
    """Adds the events to a MongoDB update so they are written atomically with it."""
    merged = {op: dict(fields) for op, fields in update.items()}
    merged.setdefault("$push", {})[OUTBOX] = {"$each": outbox_entries(events)}
    merged.setdefault("$set", {})[PENDING] = True
    return merged


def new_document_with_events(doc: Document, *events: envelope_pb2.Envelope) -> Document:
    """For an insert: the new document carries its events."""
    return {**doc, OUTBOX: outbox_entries(events), PENDING: True}


VERSION = "_v"
MAX_ATTEMPTS = 20
Change = Callable[[Document | None], Document | None]


async def change_document(
    collection: Any,
    doc_id: Any,
    change: Change,
    *events: envelope_pb2.Envelope,
    create: bool = False,
) -> Document | None:
    """Read, decide, write one document — safe against concurrent writers — with its events.

    `change` receives the current document (None when absent) and returns the fields to set,
    or None for no change. The write only lands if the document's version is still the one
    read (optimistic concurrency, retried), and the document lock of this process is held
    meanwhile (see DocumentLocks). Returns the document as written, or the unchanged one; None
    when it does not exist and `create` is false.
    """
    async with document_locks.hold(collection.name, doc_id):
        for _ in range(MAX_ATTEMPTS):
            current: Document | None = await collection.find_one({"_id": doc_id})
            if current is None and not create:
                return None
            fields = change(_without_outbox(current))
            if fields is None:
                return _without_outbox(current)
            version = int(current.get(VERSION, 0)) if current else 0
            fields = {**fields, VERSION: version + 1}
            if current is None:
                try:
                    await collection.insert_one(
                        new_document_with_events({"_id": doc_id, **fields}, *events)
                    )
                except DuplicateKeyError:
                    continue
                return {"_id": doc_id, **fields}
            guard: Document = {VERSION: version} if version else {VERSION: {"$exists": False}}
            result = await collection.update_one(
                {"_id": doc_id, **guard}, with_events({"$set": fields}, *events)
            )
            if result.modified_count == 1:
                return _without_outbox({**current, **fields})
        raise Conflict("the record is being changed by others; try again", slug="contention")


def _without_outbox(doc: Document | None) -> Document | None:
    if doc is None:
        return None
    return {k: v for k, v in doc.items() if k not in (OUTBOX, PENDING)}


class OutboxRelay:
    """Publishes pending outbox entries of the given collections; one per service process."""

    def __init__(
        self, bus: EventBus, collections: Sequence[Any], interval: float = 2.0, batch: int = 100
    ) -> None:
        self._bus = bus
        self._collections = list(collections)
        # The sweep of every collection, for what no kick named (another replica's writes, a
        # pass that failed, a process that died between its write and its kick).
        self._interval = interval
        self._batch = batch
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._dirty_ids: dict[str, set[Any]] = {}

    def kick(self, collection: Any | None = None, *ids: Any) -> None:
        """Called after a write with events, so they leave at once rather than at the next
        sweep. Naming the collection spares a scan of the others; naming the documents spares
        any scan (a scan costs as much as the collection is large on some servers)."""
        if collection is None:
            self._dirty.add("*")
        elif ids:
            self._dirty_ids.setdefault(collection.name, set()).update(ids)
        else:
            self._dirty.add(collection.name)
        self._wake.set()

    async def ensure_indexes(self) -> None:
        for col in self._collections:
            await col.create_index(PENDING, sparse=True)

    async def relay_once(
        self, only: set[str] | None = None, ids: dict[str, set[Any]] | None = None
    ) -> int:
        """One pass: the documents named in `ids` (by collection), then a scan of the
        collections in `only` (None: all of them; empty: none)."""
        sent = 0
        for col in self._collections:
            for doc_id in (ids or {}).get(col.name, ()):
                doc = await col.find_one({"_id": doc_id, PENDING: True}, {OUTBOX: 1})
                if doc is not None:
                    sent += await self._send(col, doc)
            if only is not None and col.name not in only:
                continue
            cursor = col.find({PENDING: True}, {OUTBOX: 1}).limit(self._batch)
            async for doc in cursor:
                sent += await self._send(col, doc)
        return sent

    async def _send(self, col: Any, doc: Any) -> int:
        entries = doc.get(OUTBOX) or []
        for entry in entries:
            await self._bus.publish(entry["subject"], bytes(entry["data"]), entry["id"])
        async with document_locks.hold(col.name, doc["_id"]):
            if entries:
                await col.update_one({"_id": doc["_id"]}, {"$pullAll": {OUTBOX: entries}})
            await col.update_one(
                {"_id": doc["_id"], f"{OUTBOX}.0": {"$exists": False}},
                {"$unset": {PENDING: ""}},
            )
        return len(entries)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Woken by kicks: the documents and collections written. On the timer: a sweep of
            # them all (writes of other replicas, retries after a failure).
            woken = self._wake.is_set()
            self._wake.clear()  # before the pass: a kick during it triggers another
            dirty, self._dirty = self._dirty, set()
            ids, self._dirty_ids = self._dirty_ids, {}
            # The collections to scan: all on the timer or an unnamed kick, else those named.
            sweep = not woken or "*" in dirty or not (dirty or ids)
            only = None if sweep else dirty
            try:
                await self.relay_once(only, ids if woken else None)
            except (Unavailable, PyMongoError) as exc:
                # Nothing is lost: the entries stay pending until the next pass (the sweep).
                log.warning("outbox_relay_retry", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
