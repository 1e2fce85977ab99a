"""MongoDB access: one AsyncMongoClient per process, per-service index bootstrap, the store base."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Generic, TypeVar

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect, BulkWriteError, DuplicateKeyError, PyMongoError

from dmp_kit.errors import Unavailable
from dmp_kit.logging import get_logger
from dmp_kit.tracing import mongo_listeners

Document = dict[str, Any]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
log = get_logger(__name__)

_client: AsyncMongoClient[Document] | None = None
_WORK: ContextVar[str] = ContextVar("dmp_db_work", default="")


def count_as(work: str) -> None:
    """The database commands of the calling task (and of the tasks it starts) from now on are
    counted as `work`'s, apart from the requests' (CommandCounter): for a process's background
    job, the outbox relay say, whose commands follow the answers."""
    _WORK.set(work)


class CommandCounter(monitoring.CommandListener):
    """Counts the commands this process sends to the database, by name and collection ("find
    dossiers"; pymongo's command monitoring): the benchmarks' "database operations per
    request". Those of a background job (count_as) carry its name: "update dossiers (relay)"."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        name = event.command_name
        key = f"{name} {target}" if isinstance(target, str) else name
        work = _WORK.get()
        self.counts[f"{key} ({work})" if work else key] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def keep_in(self, path: Path, every: float = 0.25, busy: float = 1.0) -> None:
        """Rewrites `path` with the counts from a daemon thread, checked every `every` seconds:
        once they stopped changing, or every `busy` seconds while they change (under load the
        file is not rewritten four times a second in every process), never when idle."""

        def loop() -> None:
            tmp = path.with_suffix(".tmp")
            seen = written = -1
            last = 0.0
            pause = threading.Event()
            while True:
                total = self.counts.total()
                now = time.monotonic()
                if total != written and (total == seen or now - last >= busy):
                    try:
                        counts = {"pid": os.getpid(), "commands": dict(self.counts)}
                    except RuntimeError:  # a new command name as it was copied: next round
                        continue
                    tmp.write_text(json.dumps(counts))
                    tmp.replace(path)
                    written, last = total, now
                seen = total
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
    """Serialises writes to one document: this process's always, every process's once `share`d.

    MongoDB applies each update to a document atomically. FerretDB 1.24 does not: it reads the
    document, checks the filter and applies the operators in memory, then writes the whole
    document back by `_id` (measured: 300 concurrent `$inc` beside other updates left 124).
    Even a compare-and-set on a version is not atomic there between two clients: two replicas
    each changing a document once in a race kept one change in four of them lost
    (tests/reliability/test_faults_scaled.py). Holding this lock around each update restores
    per-document atomicity for one process on FerretDB; on MongoDB it costs a dictionary
    lookup. With more than one replica writing to FerretDB, `share` adds a lease per document
    in the database itself, which every replica takes too (DMP_DOCUMENT_LEASES).
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}
        self._leases: Any = None

    def share(self, leases: Any) -> None:
        """Also hold each document's lease in the collection `leases`, for as long as this
        process holds its lock: the one thing FerretDB does atomically between clients is
        refuse a second document with the same `_id`."""
        self._leases = leases

    @asynccontextmanager
    async def hold(self, collection: str, doc_id: Hashable) -> AsyncIterator[None]:
        key = (collection, doc_id)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                if self._leases is None:
                    yield
                else:
                    async with lease(self._leases, f"{collection}/{doc_id!r}"):
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
        several, in one process or in two, never wait for each other."""
        async with AsyncExitStack() as held:
            for doc_id in sorted(set(doc_ids), key=repr):
                await held.enter_async_context(self.hold(collection, doc_id))
            yield


# A lease lasts LEASE_SECONDS from when it was taken or last renewed, and its holder renews it
# every third of that for as long as it holds it (a hold is a read-modify-write, milliseconds:
# renewed only when the database is slow). One left by a process that died (kill -9) is taken
# over once it has lapsed, within LEASE_SECONDS: short enough that a waiting request, which
# waits up to LEASE_WAIT_SECONDS, gets it within its deadline. The replicas' clocks must agree
# to well under a second (NTP), since a lease's end is written by one and read by another.
LEASE_SECONDS = 4.0
LEASE_WAIT_SECONDS = 10.0


@asynccontextmanager
async def lease(leases: Any, key: str) -> AsyncIterator[None]:
    """Holds the lease `key`, waiting (up to LEASE_WAIT_SECONDS) while another holds it."""
    token = os.urandom(12).hex()
    try:
        await _take(leases, key, token)
        renewing = asyncio.create_task(_renew(leases, key, token))
        try:
            yield
        finally:
            renewing.cancel()
    finally:
        # Given back however the hold ends, also when the request is cancelled while taking it:
        # an insert cancelled before its answer may still have landed, and a lease left so
        # would stop every writer of the record until it lapses. Shielded: a second
        # cancellation does not stop it.
        await asyncio.shield(leases.delete_one({"_id": key, "token": token}))


async def _take(leases: Any, key: str, token: str) -> None:
    waited, pause = 0.0, 0.002
    while True:
        now = time.time()
        try:
            await leases.insert_one({"_id": key, "token": token, "until": now + LEASE_SECONDS})
            return
        except DuplicateKeyError:
            held = await leases.find_one({"_id": key})
            if held is not None and held.get("until", 0.0) < now:
                # Its holder died holding it: whoever removes it first takes it next.
                await leases.delete_one({"_id": key, "token": held.get("token")})
                continue
        if waited >= LEASE_WAIT_SECONDS:
            raise Unavailable("the record is being changed by another request; try again")
        await asyncio.sleep(pause)
        waited += pause
        pause = min(pause * 2, 0.05)


async def _renew(leases: Any, key: str, token: str) -> None:
    """Moves the lease's end on while its hold lasts (cancelled when the hold ends). A lease
    found gone is said in the log and no longer renewed: it lapsed before a renewal (the
    process stalled for LEASE_SECONDS, or a replica's clock stepped) and another may have
    taken it, so this hold's write was not ordered with that one's. Only the collection is
    named: a record's `_id` may hold a patient's INS."""
    while True:
        await asyncio.sleep(LEASE_SECONDS / 3)
        try:
            renewed = await leases.update_one(
                {"_id": key, "token": token}, {"$set": {"until": time.time() + LEASE_SECONDS}}
            )
        except PyMongoError:
            continue  # the database away: the hold's own write fails the same way
        if renewed.matched_count == 0:
            log.warning("document_lease_lost", collection=key.partition("/")[0])
            return


document_locks = DocumentLocks()


class Store:
    """Base of every service's store: all database access of a service lives in its subclass."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.locks = document_locks

    async def ensure_indexes(self) -> None:
        """Create the indexes this store relies on (idempotent; run at start)."""

    async def settle(self) -> None:
        """Send the writes this store holds back to go together (Inserts), and wait for their
        answers: at stop, before the client closes."""


async def insert_once(collection: Any, doc: Document) -> bool:
    """Insert keyed by `_id`; False when it was already there (idempotent consumers)."""
    try:
        await collection.insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


DUPLICATE_KEY = 11000


async def insert_all(collection: Any, docs: Sequence[Document]) -> list[int]:
    """Insert small documents, each with its `_id`, unordered, as one `insert` command; returns
    the indexes of those refused as duplicates (of a stored `_id` or unique key). Any other
    refusal raises BulkWriteError, as insert_many does. For a hot path: insert_many checks
    and copies each document in Python first (a few microseconds each). The command, with
    its documents, must fit in one BSON document (16 MB); it carries the collection's write
    concern, and is not retried by the driver (the callers' writes are idempotent)."""
    if not docs:
        return []
    command: Document = {"insert": collection.name, "documents": list(docs), "ordered": False}
    if not collection.write_concern.is_server_default:  # the client's w=majority, say
        command["writeConcern"] = collection.write_concern.document
    reply = await collection.database.command(command)
    errors = reply.get("writeErrors", [])
    if reply.get("writeConcernError") or any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise BulkWriteError(
            {
                "writeErrors": errors,
                "writeConcernErrors": [reply["writeConcernError"]]
                if reply.get("writeConcernError")
                else [],
                "nInserted": reply.get("n", 0),
                "nUpserted": 0,
                "nMatched": 0,
                "nModified": 0,
                "nRemoved": 0,
                "upserted": [],
            }
        )
    return [int(e["index"]) for e in errors]


class Inserts:
    """Inserts into one collection from tasks that run at once, sent together: each caller's
    document joins the next `insert` command (insert_all: unordered), sent once no other
    document has come for `window` seconds, `longest` seconds after the first at the latest,
    or as soon as `most` are waiting. Each caller gets its own document's outcome, as from
    insert_once: True inserted, False already there (its `_id` or a unique key), or the error
    that refused it. An error that refused the command as a whole (the database away, say)
    goes to every caller in it, though part of its documents may be stored: callers whose
    effects are keyed by `_id`, retried, find them.

    For a consumer handling a batch of events at once: its handlers' writes of one kind go in
    one round trip instead of one each, the writes that trickle in (each after its own e-mail,
    say) as well as those that come together. Small documents only (a command fits in 16 MB).
    """

    def __init__(
        self, collection: Any, window: float = 0.002, longest: float = 0.02, most: int = 128
    ) -> None:
        self.collection = collection
        self._window = window
        self._longest = max(window, longest)
        self._most = most
        self._waiting: list[tuple[Document, asyncio.Future[bool]]] = []
        self._first = 0.0  # when the first document waiting came
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def insert_once(self, doc: Document) -> bool:
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((doc, outcome))
        now = loop.time()
        if len(self._waiting) == 1:
            self._first = now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if len(self._waiting) >= self._most:
            self._send()
        else:
            self._timer = loop.call_at(
                min(now + self._window, self._first + self._longest), self._send
            )
        return await outcome

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._insert(group))
        self._sending.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sending.discard)

    async def settle(self) -> None:
        """Sends what waits now and returns once every command sent has its answer: before
        the client closes, so that a write whose caller was cancelled (a stopping consumer)
        is not lost with it."""
        if self._waiting:
            self._send()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def _insert(self, group: list[tuple[Document, asyncio.Future[bool]]]) -> None:
        refused: dict[int, Exception | None] = {}
        docs = [doc for doc, _ in group]
        try:
            try:
                duplicates = await insert_all(self.collection, docs)
            except AutoReconnect:  # once more, as the driver retries a single insert: what
                # the first try stored comes back as duplicates
                duplicates = await insert_all(self.collection, docs)
            refused = dict.fromkeys(duplicates)
        except BulkWriteError as exc:  # refusals of their own: each to its caller
            for error in exc.details.get("writeErrors", []):
                index = int(error["index"])
                refused[index] = (
                    None
                    if error.get("code") == DUPLICATE_KEY
                    else BulkWriteError({**exc.details, "writeErrors": [error]})
                )
            if exc.details.get("writeConcernErrors"):
                refused = dict.fromkeys(range(len(group)), exc)
        except asyncio.CancelledError:  # the loop stopping: the callers fail, not cancelled
            # (a consumer would take its handler's cancellation for its own)
            refused = dict.fromkeys(range(len(group)), Unavailable("the insert was cancelled"))
            raise
        except Exception as exc:  # the command as a whole
            refused = dict.fromkeys(range(len(group)), exc)
        finally:
            for index, (_, outcome) in enumerate(group):
                if outcome.done():  # its caller was cancelled meanwhile
                    continue
                with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                    if index not in refused:
                        outcome.set_result(True)
                    elif (error := refused[index]) is None:
                        outcome.set_result(False)
                    else:
                        outcome.set_exception(error)


class SharedReads(Generic[K, V]):
    """Reads by key from tasks that run at once, one command per key: a caller asking for a
    key whose read is under way waits for that read's answer instead of sending its own.
    Nothing is kept after the answer: a caller that comes after it reads again, so what a
    caller gets was read after it asked, or by a read still under way when it asked (as if
    its own had been answered first).

    For a consumer handling a batch of events at once: a burst of events about one person
    (a hospital filing a stay's documents) reads their record once, not once each."""

    def __init__(self, read: Callable[[K], Awaitable[V]]) -> None:
        self._read = read
        self._under_way: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        read = self._under_way.get(key)
        if read is None or read.done():
            read = self._under_way[key] = asyncio.ensure_future(self._read(key))
            read.add_done_callback(functools.partial(self._done, key))
        # shielded: a caller cancelled does not cancel the read the others wait for
        return await asyncio.shield(read)

    def _done(self, key: K, read: asyncio.Future[V]) -> None:
        if self._under_way.get(key) is read:
            del self._under_way[key]
        if not read.cancelled():
            read.exception()  # retrieved: every caller may have been cancelled meanwhile


async def upsert(operation: Callable[[], Awaitable[Any]]) -> Any:
    """Runs an upsert keyed by `_id`, once more if it lost a race: two replicas upserting the
    same new document at once both miss it, both insert, and one gets a duplicate key — its
    second try finds the document and updates it (MongoDB retries this itself from 4.2 for
    an `_id` equality; FerretDB does not)."""
    try:
        return await operation()
    except DuplicateKeyError:
        return await operation()
