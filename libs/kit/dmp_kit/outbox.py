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
import time
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
MAX_SCANS = 100  # batches of one collection in one pass
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
        self,
        bus: EventBus,
        collections: Sequence[Any],
        interval: float = 2.0,
        batch: int = 100,
        sweep_interval: float = 60.0,
    ) -> None:
        self._bus = bus
        self._collections = list(collections)
        # A pass that failed (NATS or the database away) is tried again after `interval`.
        self._interval = interval
        # The sweep of every collection, at start and then every `sweep_interval`, is for what
        # no kick of this process named: a process that died between its write and its kick,
        # another replica's. It is rare because a scan costs as much as the collection is
        # large on some servers (FerretDB scans for any filter not on `_id`).
        self._sweep_interval = sweep_interval
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
            for _ in range(MAX_SCANS):  # batch after batch, until none is left pending
                found = [d async for d in col.find({PENDING: True}, {OUTBOX: 1}).limit(self._batch)]
                for doc in found:
                    sent += await self._send(col, doc)
                if len(found) < self._batch:
                    break
        return sent

    async def _send(self, col: Any, doc: Any) -> int:
        entries = doc.get(OUTBOX) or []
        for entry in entries:
            await self._bus.publish(entry["subject"], bytes(entry["data"]), entry["id"])
        async with document_locks.hold(col.name, doc["_id"]):
            if entries:
                # Usually the outbox holds just what was sent: emptied in one write (each
                # write costs a scan of the collection on FerretDB). Else, those entries out.
                emptied = await col.update_one(
                    {"_id": doc["_id"], OUTBOX: entries},
                    {"$set": {OUTBOX: []}, "$unset": {PENDING: ""}},
                )
                if emptied.modified_count == 1:
                    return len(entries)
                await col.update_one({"_id": doc["_id"]}, {"$pullAll": {OUTBOX: entries}})
            await col.update_one(
                {"_id": doc["_id"], f"{OUTBOX}.0": {"$exists": False}},
                {"$unset": {PENDING: ""}},
            )
        return len(entries)

    async def run(self, stop: asyncio.Event) -> None:
        async def wake_on_stop() -> None:
            await stop.wait()
            self._wake.set()

        watcher = asyncio.create_task(wake_on_stop())
        try:
            await self._loop(stop)
        finally:
            watcher.cancel()

    async def _loop(self, stop: asyncio.Event) -> None:
        next_sweep = 0.0  # at once: whatever a previous process left pending
        while not stop.is_set():
            self._wake.clear()  # before the pass: a kick during it triggers another
            dirty, self._dirty = self._dirty, set()
            ids, self._dirty_ids = self._dirty_ids, {}
            started = time.monotonic()
            sweep = started >= next_sweep or "*" in dirty
            wait = self._interval
            try:
                # The documents the kicks named, then a scan of the collections named without
                # documents (all of them on a sweep).
                await self.relay_once(None if sweep else dirty, ids)
            except (Unavailable, PyMongoError) as exc:
                # Nothing is lost: the entries stay pending, and this pass is tried again.
                log.warning("outbox_relay_retry", error=type(exc).__name__)
                self._dirty |= {"*"} if sweep else dirty
                for name, named in ids.items():
                    self._dirty_ids.setdefault(name, set()).update(named)
            else:
                if sweep:
                    next_sweep = started + self._sweep_interval
                wait = max(0.0, next_sweep - time.monotonic())
                if self._dirty or self._dirty_ids:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
