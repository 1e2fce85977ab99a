"""MongoDB access: one AsyncMongoClient per process, per-service index bootstrap, the store base."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from dmp_kit.tracing import mongo_listeners

Document = dict[str, Any]

_client: AsyncMongoClient[Document] | None = None


class CommandCounter(monitoring.CommandListener):
    """Counts the commands this process sends to the database, by name (pymongo's command
    monitoring): the benchmarks' "database operations per request"."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def keep_in(self, path: Path, every: float = 0.25) -> None:
        """Rewrites `path` with the counts, checked every `every` seconds from a daemon thread
        and written when they changed (an idle process writes nothing)."""

        def loop() -> None:
            tmp = path.with_suffix(".tmp")
            written = -1
            pause = threading.Event()
            while True:
                total = self.counts.total()
                if total != written:
                    try:
                        counts = {"pid": os.getpid(), "commands": dict(self.counts)}
                    except RuntimeError:  # a new command name as it was copied: next round
                        continue
                    tmp.write_text(json.dumps(counts))
                    tmp.replace(path)
                    written = total
                pause.wait(every)

        threading.Thread(target=loop, name="mongo-ops", daemon=True).start()


def mongo_client(
    url: str, timeout_ms: int, counter: CommandCounter | None = None
) -> AsyncMongoClient[Document]:
    """The process's one client (it pools connections itself)."""
    global _client
    if _client is None:
        _client = AsyncMongoClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms * 2,
            appname="dmp",
            event_listeners=[*([counter] if counter is not None else []), *mongo_listeners()],
        )
    return _client


async def close_mongo() -> None:
    global _client
    if _client is not None:
        await _client.close()
        _client = None


async def ping(db: AsyncDatabase[Document]) -> bool:
    try:
        await db.command("ping")
    except PyMongoError:
        return False
    return True


class DocumentLocks:
    """Serialises this process's writes to one document.

    MongoDB applies each update to a document atomically. FerretDB 1.24 does not: it reads the
    document, applies the operators in memory and writes the whole document back, so two
    concurrent updates of one document can lose one (measured: 300 concurrent `$inc` beside
    other updates left 124). Every collection is written by one service only, so holding this
    lock around each update restores per-document atomicity for a single replica on FerretDB;
    on MongoDB it costs a dictionary lookup.
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, collection: str, doc_id: Hashable) -> AsyncIterator[None]:
        key = (collection, doc_id)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @asynccontextmanager
    async def hold_all(self, collection: str, doc_ids: Iterable[Hashable]) -> AsyncIterator[None]:
        """The locks of many documents, taken in one order (by `repr`) so that two holders of
        several never wait for each other."""
        async with AsyncExitStack() as held:
            for doc_id in sorted(set(doc_ids), key=repr):
                await held.enter_async_context(self.hold(collection, doc_id))
            yield


document_locks = DocumentLocks()


class Store:
    """Base of every service's store: all database access of a service lives in its subclass."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.locks = document_locks

    async def ensure_indexes(self) -> None:
        """Create the indexes this store relies on (idempotent; run at start)."""


async def insert_once(collection: Any, doc: Document) -> bool:
    """Insert keyed by `_id`; False when it was already there (idempotent consumers)."""
    try:
        await collection.insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


async def upsert(operation: Callable[[], Awaitable[Any]]) -> Any:
    """Runs an upsert keyed by `_id`, once more if it lost a race: two replicas upserting the
    same new document at once both miss it, both insert, and one gets a duplicate key — its
    second try finds the document and updates it (MongoDB retries this itself from 4.2 for
    an `_id` equality; FerretDB does not)."""
    try:
        return await operation()
    except DuplicateKeyError:
        return await operation()
