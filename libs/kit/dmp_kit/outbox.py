"""The transactional outbox: events stored inside the changed document, relayed, then removed.

A store that changes a document and must publish writes, in the same single-document update,
the serialised envelope into the document's `outbox` array and sets `outbox_pending`. The relay
publishes pending entries with `Nats-Msg-Id` = event id (so a relay that dies between publish
and removal causes no duplicate), then removes exactly the entries it published with `$pullAll`
(exact values: portable to FerretDB, where `$pull` with a condition is not supported).
When `change_document` wrote a document's whole outbox (it found it empty), the relay's pass
for that document's kick publishes and clears it from memory instead of reading it back
(`KnownOutboxes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bson import Binary
from cachetools import LRUCache
from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError, PyMongoError

from dmp.events.v1 import envelope_pb2
from dmp_kit.bus import EventBus
from dmp_kit.errors import Conflict, Unavailable
from dmp_kit.events import event_time
from dmp_kit.forget import patient_data
from dmp_kit.logging import get_logger
from dmp_kit.metrics import OUTBOX_OLDEST, OUTBOX_PENDING, OUTBOX_PUBLISHED
from dmp_kit.mongo import Document, count_as, document_locks

log = get_logger(__name__)

OUTBOX = "outbox"
PENDING = "outbox_pending"


def outbox_entries(events: Sequence[envelope_pb2.Envelope]) -> list[Document]:
    return [{"id": e.id, "subject": e.type, "data": Binary(e.SerializeToString())} for e in events]


def with_events(update: Document, *events: envelope_pb2.Envelope) -> Document:
    """Adds the events to a MongoDB update so they are written atomically with it. With no
    event the update is left as it is: a document is pending only while it holds events (a
    flag with nothing behind it would wait for the relay's next sweep, and so would anything
    that waits for the outbox to drain)."""
    merged = {op: dict(fields) for op, fields in update.items()}
    if events:
        merged.setdefault("$push", {})[OUTBOX] = {"$each": outbox_entries(events)}
        merged.setdefault("$set", {})[PENDING] = True
    return merged


def new_document_with_events(doc: Document, *events: envelope_pb2.Envelope) -> Document:
    """For an insert: the new document carries its events (and is pending only if any)."""
    if not events:
        return dict(doc)
    return {**doc, OUTBOX: outbox_entries(events), PENDING: True}


VERSION = "_v"
# Documents noted by `change_document` per process: at most this many (each until its kick is
# relayed); beyond it, the oldest are forgotten and read back from the database instead.
KNOWN_MAX = 10_000


class KnownOutboxes:
    """The outboxes this process knows whole without reading them: a document whose write
    found its outbox empty and landed on the version read (or created it) holds exactly the
    events of that write. The relay publishes and clears those from memory, one database
    operation fewer per write. A later write of the same document that finds events still
    pending forgets it (the relay then reads the document); so does anything relayed after a
    read. A note left stale only costs an extra publish, which JetStream drops by event id,
    and a clearing that matches nothing (it names the exact entries).

    An outbox the relay emptied exactly (its clearing named every entry and matched) is known
    empty, under the document's lock: a remembered write (`change_document`) that lands on
    the version this process wrote then knows the whole outbox it leaves. A kick never takes
    an empty one: what it names is read."""

    def __init__(self, limit: int = KNOWN_MAX) -> None:
        self._known: dict[tuple[str, Any], list[Document]] = {}
        self._limit = limit

    # keyed by the collection's full name (database.collection) and the document's _id
    def note(self, collection: str, doc_id: Any, entries: list[Document]) -> None:
        key = (collection, doc_id)
        self._known.pop(key, None)
        if len(self._known) >= self._limit:
            del self._known[next(iter(self._known))]
        self._known[key] = entries

    def forget(self, collection: str, doc_id: Any) -> None:
        self._known.pop((collection, doc_id), None)

    def peek(self, collection: str, doc_id: Any) -> list[Document] | None:
        return self._known.get((collection, doc_id))

    def take(self, collection: str, doc_id: Any) -> list[Document] | None:
        return self._known.pop((collection, doc_id), None) or None


known_outboxes = KnownOutboxes()

# A write of `change_document(remember=True)` sets this to a value of its own: a document
# deleted and made again can come back to a version remembered, never to this.
STAMP = "_w"
# The documents remembered, per process: their stored bytes (about) at most.
WRITTEN_BYTES = 16 * 1024 * 1024


def _size(doc: Document) -> int:
    """About the bytes `doc` takes: its bytes and strings, and a little per field."""
    return sum(
        len(value) if isinstance(value, (bytes, str)) else 16 for value in doc.values()
    ) + 32 * len(doc)


# How much each write's outcome weighs in its collection's share of remembered documents found
# as this process wrote them (an exponential average): about the last fifty writes count.
HITS_WEIGHT = 0.02


class WrittenDocuments:
    """The documents this process last wrote with `change_document(remember=True)`, as
    written (without their outbox), by collection (its full name) and `_id`: the next change
    decides on them without reading them, guarded by their version and stamp. The least
    recently used go beyond WRITTEN_BYTES; one that went is read, as is one changed since.

    A guess that misses costs a command (the update matching nothing) before the read: worth
    it only while most are found as written. Each collection keeps that share over its last
    writes, learnt from every write a document was remembered for — a guess's outcome, or,
    when it read first, whether what it read was the version remembered — and guesses while
    it is at least half. Several replicas taking turns on the same documents read first."""

    def __init__(self, limit: int = WRITTEN_BYTES) -> None:
        self._held: LRUCache[tuple[str, Any], Document] = patient_data(
            LRUCache(limit, getsizeof=_size)
        )
        self._hits: dict[str, float] = {}

    def get(self, collection: str, doc_id: Any) -> Document | None:
        return self._held.get((collection, doc_id))

    def put(self, collection: str, doc_id: Any, doc: Document) -> None:
        if _size(doc) <= self._held.maxsize:
            self._held[(collection, doc_id)] = dict(doc)  # the caller's copy may change

    def forget(self, collection: str, doc_id: Any) -> None:
        self._held.pop((collection, doc_id), None)

    def worth_guessing(self, collection: str) -> bool:
        return self._hits.get(collection, 1.0) >= 0.5

    def found(self, collection: str, as_written: bool) -> None:
        """A remembered document was found as written (or not)."""
        share = self._hits.get(collection, 1.0)
        self._hits[collection] = share + HITS_WEIGHT * (float(as_written) - share)


written_documents = WrittenDocuments()
MAX_ATTEMPTS = 20
MAX_SCANS = 100  # batches of one collection in one pass
# The backlog's gauges are read every this many seconds, from up to SAMPLE pending documents
# (counted exactly beyond that).
SAMPLE_INTERVAL_SECONDS = 10.0
SAMPLE = 1000
Change = Callable[[Document | None], Document | None]
# `change_document`'s `first` when the caller did not read the document: it reads it.
UNREAD: Any = object()


async def change_document(
    collection: Any,
    doc_id: Any,
    change: Change,
    *events: envelope_pb2.Envelope,
    create: bool = False,
    before_write: Callable[[], Awaitable[None]] | None = None,
    remember: bool = False,
    first: Document | None = UNREAD,
    beside: Sequence[Document] = (),
) -> Document | None:
    """Read, decide, write one document — safe against concurrent writers — with its events.

    `change` receives the current document (None when absent) and returns the fields to set,
    or None for no change. The write only lands if the document's version is still the one
    read (optimistic concurrency, retried), and the document lock of this process is held
    meanwhile (see DocumentLocks). Returns the document as written, or the unchanged one; None
    when it does not exist and `create` is false. `before_write` is awaited before each attempt
    to write (not when there is nothing to write); if it raises, nothing is written.

    `remember`: the document as this process last wrote it is decided on without reading it
    (`WrittenDocuments`), the write landing only if no writer changed it since — its version
    and this write's stamp still those written (the relay only takes entries out of its
    outbox); else it is read and decided on again, as is any refusal or "no change" `change`
    gives on what was remembered. For documents whose fields only `change_document` changes
    (any other write would go unseen).

    `first`: the document as the caller read it (whole, outbox included; None: absent), when
    it had to read it before something else: decided on first as if read here.

    `beside`: other documents of the collection (each with its `_id`) the write needs stored
    before it lands, a new document's content say: each inserted unless its `_id` is there
    already (sent again with a retried write, it is left as it is). They go in the same
    command as an update, before it (one round trip, not two); before an insert, in a command
    of their own. Whatever happens to the write, they may be stored: the caller removes them
    if it must.
    """
    name = collection.full_name
    async with document_locks.hold(collection.name, doc_id):
        remembered = written_documents.get(name, doc_id) if remember else None
        given = first is not UNREAD
        guessing = remembered and not given and written_documents.worth_guessing(name)
        known = remembered if guessing else None
        for _ in range(MAX_ATTEMPTS):
            guessed = known is not None
            if known is not None:
                current: Document | None = known
                known = None
            else:
                if given:
                    current, given = first, False
                else:
                    current = await collection.find_one({"_id": doc_id})
                if remembered is not None:  # would a guess have landed?
                    written_documents.found(name, _as_written(current, remembered))
                    remembered = None
            if current is None and not create:
                return None
            try:
                fields = change(_without_outbox(current))
            except Exception:
                if guessed:
                    continue  # decided on what was remembered: decided again on what is
                raise
            if fields is None:
                if guessed:
                    continue
                return _without_outbox(current)
            version = int(current.get(VERSION, 0)) if current else 0
            fields = {**fields, VERSION: version + 1}
            if remember:
                fields[STAMP] = os.urandom(8).hex()
            if before_write is not None:
                await before_write()
            if current is None:
                if beside:
                    await collection.bulk_write(_stored_once(beside), ordered=True)
                try:
                    await collection.insert_one(
                        new_document_with_events({"_id": doc_id, **fields}, *events)
                    )
                except DuplicateKeyError:
                    continue
                _note_outbox(collection, doc_id, None, events)
                created: Document = {"_id": doc_id, **fields}
                if remember:
                    written_documents.put(name, doc_id, created)
                return created
            guard: Document = {VERSION: version} if version else {VERSION: {"$exists": False}}
            if guessed:
                guard = {**guard, STAMP: current[STAMP]}
            update = ({"_id": doc_id, **guard}, with_events({"$set": fields}, *events))
            if beside:  # modified: the update (one stored once is inserted or left as it is)
                result = await collection.bulk_write(
                    [*_stored_once(beside), UpdateOne(*update)], ordered=True
                )
            else:
                result = await collection.update_one(*update)
            if guessed:
                written_documents.found(name, result.modified_count == 1)
                remembered = None
            if result.modified_count == 1:
                if guessed:
                    _note_more(collection, doc_id, events)
                else:
                    _note_outbox(collection, doc_id, current, events)
                written = _stripped({**current, **fields})
                if remember:
                    written_documents.put(name, doc_id, written)
                return written
            if remember:
                written_documents.forget(name, doc_id)
        raise Conflict("the record is being changed by others; try again", slug="contention")


def _stored_once(docs: Sequence[Document]) -> list[UpdateOne]:
    """Each document inserted unless its `_id` is there: matched then, never modified."""
    return [
        UpdateOne(
            {"_id": doc["_id"]},
            {"$setOnInsert": {k: v for k, v in doc.items() if k != "_id"}},
            upsert=True,
        )
        for doc in docs
    ]


def _note_outbox(
    collection: Any, doc_id: Any, before: Document | None, events: Sequence[envelope_pb2.Envelope]
) -> None:
    """After a write of `events` that landed on `before` (None: created): its outbox is known
    whole if it was empty before."""
    if not events:
        return
    if before is not None and before.get(OUTBOX):
        known_outboxes.forget(collection.full_name, doc_id)  # events before ours: read it whole
        return
    known_outboxes.note(collection.full_name, doc_id, outbox_entries(events))


def written_version(doc: Document | None) -> tuple[Any, Any] | None:
    """The version of `doc` a remembered write is guarded by: its version and the stamp of
    the write that made it (None: no document)."""
    return None if doc is None else (doc.get(VERSION), doc.get(STAMP))


def _as_written(current: Document | None, remembered: Document) -> bool:
    return current is not None and written_version(current) == written_version(remembered)


def _note_more(collection: Any, doc_id: Any, events: Sequence[envelope_pb2.Envelope]) -> None:
    """After a remembered write of `events` (not read: its outbox is known only if noted)."""
    if not events:
        return
    before = known_outboxes.peek(collection.full_name, doc_id)
    if before is not None:  # else the relay took it and may be under way: it reads the rest
        known_outboxes.note(collection.full_name, doc_id, [*before, *outbox_entries(events)])


def _without_outbox(doc: Document | None) -> Document | None:
    return None if doc is None else _stripped(doc)


def _stripped(doc: Document) -> Document:
    return {k: v for k, v in doc.items() if k not in (OUTBOX, PENDING)}


# Updates per `bulk_write`: FerretDB 1.24 on PostgreSQL holds one connection of its pool of 50
# per update of a command until the command ends, and waits for ever for the 50th (measured:
# 49 updates in 0.4 s, 50 never answered, nor anything else after). Updates sent at once by
# every relay of the platform must stay below that, whatever else is in flight.
UPDATES_PER_WRITE = 8


async def _bulk_update(col: Any, ops: list[UpdateOne]) -> int:
    """The updates in writes of UPDATES_PER_WRITE, in order; how many matched."""
    matched = 0
    for first in range(0, len(ops), UPDATES_PER_WRITE):
        result = await col.bulk_write(ops[first : first + UPDATES_PER_WRITE], ordered=True)
        matched += result.matched_count
    return int(matched)


class OutboxRelay:
    """Publishes pending outbox entries of the given collections; one per service process.

    It works in batches, so that a burst costs a few round trips per batch rather than several
    per document: the pending documents of a batch are read in one query (or, when a kick named
    only a few, each by `_id`), every entry of the batch is published at once (the documents
    concurrently, each document's entries in order) and JetStream's acknowledgements awaited
    together, then the batch is cleared by `bulk_write`s of a few updates each. A crash at any
    point leaves the entries not yet cleared pending: they are published again, and JetStream
    drops them by their `Nats-Msg-Id` (its duplicate window is ten minutes).
    """

    def __init__(
        self,
        bus: EventBus,
        collections: Sequence[Any],
        interval: float = 2.0,
        batch: int = 200,
        sweep_interval: float = 60.0,
        by_id: int = 16,
    ) -> None:
        self._bus = bus
        self._collections = list(collections)
        # A pass that failed (NATS or the database away) is tried again after `interval`.
        self._interval = interval
        # The sweep of every collection, at start and then every `sweep_interval`, is for what
        # no kick of this process named: a process that died between its write and its kick,
        # another replica's.
        self._sweep_interval = sweep_interval
        self._batch = batch
        # Up to this many documents named by kicks are read each by `_id`; more, and one query
        # for the pending documents reads them all (a burst). FerretDB turns both into an
        # indexed lookup on PostgreSQL (top-level equalities); on SQLite only `_id` is.
        self._by_id = by_id
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._dirty_ids: dict[str, set[Any]] = {}

    def kick(self, collection: Any | None = None, *ids: Any) -> None:
        """Called after a write with events, so they leave at once rather than at the next
        sweep. Naming the collection spares a scan of the others; naming the documents spares
        any scan."""
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
        """One pass: the documents named in `ids` (by collection), and every pending document
        of the collections in `only` (None: all of them; empty: none)."""
        sent = 0
        for col in self._collections:
            named = list((ids or {}).get(col.name, ()))
            if (only is None or col.name in only) or len(named) > self._by_id:
                for doc_id in named:
                    known_outboxes.forget(col.full_name, doc_id)
                sent += await self._scan(col)
                continue
            for first in range(0, len(named), self._batch):
                # One after the other: FerretDB 1.24 on PostgreSQL can hang for good when more
                # queries than its pool of 50 connections are in flight while a collection is
                # created, so the relay keeps no more than one.
                found = []
                for doc_id in named[first : first + self._batch]:
                    entries = known_outboxes.take(col.full_name, doc_id)
                    if entries is not None:  # written by this process just now: no read
                        found.append({"_id": doc_id, OUTBOX: entries})
                        continue
                    doc = await col.find_one({"_id": doc_id, PENDING: True}, {OUTBOX: 1})
                    if doc is not None:
                        found.append(doc)
                sent += await self._relay_batch(col, found)
        return sent

    async def _scan(self, col: Any) -> int:
        sent = 0
        for _ in range(MAX_SCANS):  # batch after batch, until none is left pending
            found = [d async for d in col.find({PENDING: True}, {OUTBOX: 1}).limit(self._batch)]
            for doc in found:  # read whole here: what was known of them is relayed with it
                known_outboxes.forget(col.full_name, doc["_id"])
            sent += await self._relay_batch(col, found)
            if len(found) < self._batch:
                break
        return sent

    async def _relay_batch(self, col: Any, docs: list[Document]) -> int:
        """Publishes the batch's entries, then clears the documents whose entries all left.
        A failed publish fails the pass after the others are cleared."""
        outcomes = await asyncio.gather(
            *(self._publish(doc) for doc in docs), return_exceptions=True
        )
        published = [doc for doc, failed in zip(docs, outcomes, strict=True) if failed is None]
        sent = await self._clear(col, published)
        for failed in outcomes:
            if isinstance(failed, BaseException):
                raise failed
        return sent

    async def _publish(self, doc: Document) -> None:
        # In order within a document: its events are facts about one thing, in sequence.
        for entry in doc.get(OUTBOX) or []:
            await self._bus.publish(entry["subject"], bytes(entry["data"]), entry["id"])

    async def _clear(self, col: Any, docs: list[Document]) -> int:
        """Takes the published entries out, a few documents per round trip.

        Each document's outbox is emptied only if it still holds exactly what was published;
        a document changed since it was read (new events) has just those entries pulled out
        instead, so a concurrent change's events stay. The process's locks on the documents
        are held meanwhile: on FerretDB an update rewrites the whole document and would undo a
        concurrent change of this process (see DocumentLocks). They are taken for one round
        trip's documents at a time, not the batch's: a lock that keeps the relay waiting (a
        lease left by a replica killed while holding it, until it lapses) holds up the writers
        of that round trip's few documents, not those of every document of the batch. The
        documents go in the order of their `_id`s, the locks' own order. Returns how many
        entries were cleared; each round trip's count once it is done (a later one failing
        does not take back what went before)."""
        cleared = 0
        ordered = sorted(docs, key=lambda doc: repr(doc["_id"]))
        for first in range(0, len(ordered), UPDATES_PER_WRITE):
            group = ordered[first : first + UPDATES_PER_WRITE]
            async with document_locks.hold_all(col.name, [doc["_id"] for doc in group]):
                await self._clear_group(col, group)
            sent = sum(len(doc.get(OUTBOX) or []) for doc in group)
            OUTBOX_PUBLISHED.labels(col.name).inc(sent)
            cleared += sent
        return cleared

    async def _clear_group(self, col: Any, docs: list[Document]) -> None:
        emptied = await _bulk_update(
            col,
            [
                UpdateOne(
                    {"_id": doc["_id"], OUTBOX: doc.get(OUTBOX) or []},
                    {"$set": {OUTBOX: []}, "$unset": {PENDING: ""}},
                )
                for doc in docs
            ],
        )
        if emptied == len(docs):
            for doc in docs:  # under their locks: no write of this process came between
                known_outboxes.note(col.full_name, doc["_id"], [])
            return
        # Some changed meanwhile; which ones the answer does not say, and they are few.
        pulled: list[UpdateOne] = []
        for doc in docs:
            if doc.get(OUTBOX):
                pulled.append(UpdateOne({"_id": doc["_id"]}, {"$pullAll": {OUTBOX: doc[OUTBOX]}}))
            pulled.append(
                UpdateOne(
                    {"_id": doc["_id"], f"{OUTBOX}.0": {"$exists": False}},
                    {"$unset": {PENDING: ""}},
                )
            )
        await _bulk_update(col, pulled)

    async def backlog(self) -> None:
        """Sets the backlog's gauges: per collection, the documents holding events and the age
        of the oldest event among (up to SAMPLE of) them — their ids are UUIDv7, which begin
        with their time. One indexed query per collection; a count only beyond SAMPLE."""
        now = time.time()
        for col in self._collections:
            # The entries' ids only: the events themselves stay in the database.
            found = [d async for d in col.find({PENDING: True}, {f"{OUTBOX}.id": 1}).limit(SAMPLE)]
            # Only documents that still hold an event: a flag whose entries were just taken
            # out (a relay's clearing under way) is not a backlog.
            waiting = [[e["id"] for e in d.get(OUTBOX) or [] if "id" in e] for d in found]
            pending = sum(1 for ids in waiting if ids)
            if len(found) == SAMPLE:
                pending = await col.count_documents(
                    {PENDING: True, f"{OUTBOX}.0": {"$exists": True}}
                )
            times = [event_time(i) for ids in waiting for i in ids]
            OUTBOX_PENDING.labels(col.name).set(pending)
            OUTBOX_OLDEST.labels(col.name).set(max(0.0, now - min(times)) if times else 0.0)

    async def run(self, stop: asyncio.Event) -> None:
        count_as("relay")  # its commands follow the answers: counted apart from theirs

        async def wake_on_stop() -> None:
            await stop.wait()
            self._wake.set()

        async def watch_backlog() -> None:
            while not stop.is_set():
                try:
                    await self.backlog()
                except PyMongoError as exc:  # the database away: the next sample tells
                    log.debug("outbox_backlog_unknown", error=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=SAMPLE_INTERVAL_SECONDS)

        watchers = [asyncio.create_task(wake_on_stop()), asyncio.create_task(watch_backlog())]
        try:
            await self._loop(stop)
        finally:
            for watcher in watchers:
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
