"""The audit log: appends records in stream order, signs tree heads, serves entries and proofs.

One writer owns the log. It appends each batch of records as one chunk. The chunk is the
commit point: a chunk already stored at our position means another writer exists — we stop
appending. What follows from the chunk is then stored: the tree's tiles it completes, each
entry's place in its dossier's trail, and last the tree's right edge. At start the log reads
that edge and the newest signed head, checks one against the other, and hashes again only what
a crash left after the edge: memory and start time do not grow with the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog
import zstandard

from dmp.events.v1 import envelope_pb2
from dmp_audit.config import AuditSettings
from dmp_audit.entry import Entry, TreeHead, TreeHeadSigner, clean_ins, rfc3339, rfc3339_of
from dmp_audit.keys import LogKey, head_problem
from dmp_audit.merkle import leaf_hash
from dmp_audit.note import Checkpoint, NoteSigner
from dmp_audit.store import AuditStore, unpack
from dmp_audit.tiles import BadEdge, Tile, TiledTree, TileError, TileFiles, TileKey
from dmp_audit.verify import HEADS, scan
from dmp_kit.clock import Clock

log = structlog.get_logger("dmp.audit")


class NotSequencer(RuntimeError):
    """This replica no longer holds the sequencer's lease: it must not append."""


class LogStale(RuntimeError):
    """A write after a chunk failed: the log must be reloaded before it signs or appends."""


class LogCorrupted(RuntimeError):
    """The stored log does not verify: appending to it would bury the evidence."""


@dataclass(frozen=True)
class Record:
    """One message from the AUDIT stream: its stream sequence and its envelope (None when the
    payload could not be decoded)."""

    stream_seq: int
    event: envelope_pb2.Envelope | None


WRITERS = 4  # concurrent inserts of a batch's event ids, and of its trail…
PART_MIN = 128  # …of this many documents at least: a trickle's batch is one insert of each


class AuditLog:
    def __init__(
        self,
        store: AuditStore,
        signer: TreeHeadSigner,
        clock: Clock,
        settings: AuditSettings,
        keys: Mapping[str, LogKey] | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.notes = NoteSigner(settings.origin, signer.private_key)
        # every key a stored head may be signed by, the signer's first (keys.py)
        own = LogKey(signer.public_key, self.notes.verifier_key)
        self.keys = dict(keys or {signer.key_id: own})
        if signer.key_id not in self.keys:
            raise ValueError("the signing key is not among the log's keys")
        self._note: tuple[int, bytes] = (-1, b"")
        self.clock = clock
        self.settings = settings
        self._files = (
            TileFiles(Path(settings.tile_dir), settings.tile_dir_max_mb << 20)
            if settings.tile_dir
            else None
        )
        self.tree = self._tree()
        self.stream_last = 0
        # the stream position up to which the log's trails and edge are stored (the appender's)
        self.stored_last = 0
        self.head: TreeHead | None = None
        self.write_lock = asyncio.Lock()
        self._chunks: OrderedDict[int, list[bytes]] = OrderedDict()
        # ins -> (n, leaf hash) of the dossier's newest entry, for the dossiers seen lately
        self._chains: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._signed_at = 0.0
        self._stale = False  # a write after the commit point failed: reload before appending
        self._behind: asyncio.Task[None] | None = None  # the last chunk's derivation
        # ins -> (n, leaf hash) of entries whose trail is being stored (newest per dossier)
        self._unstored: dict[str, tuple[int, bytes]] = {}
        # Asked before each chunk: is this replica still the sequencer (its lease held)?
        self.may_append: Callable[[], bool] = lambda: True
        # Set by a reader waiting for the log to hold what was recorded before its read: the
        # appender's linger (consumer.py) ends at once.
        self.hurry = asyncio.Event()
        self.loaded = False
        self._following = asyncio.Lock()

    def _tree(self, size: int = 0, edge: Sequence[bytes] = ()) -> TiledTree:
        return TiledTree(
            self.store.load_tiles, size, edge, cache=self.settings.tile_cache, files=self._files
        )

    # start -----------------------------------------------------------------------------

    async def follow(self) -> None:
        """For a replica that does not append (another holds the sequencer's lease): the
        stored edge and newest head, as the sequencer last wrote them, nothing written. Reads
        are served from them; called again every so often to follow the log, and by a read
        that finds nothing followed yet (one at a time: an older edge never replaces a newer)."""
        async with self._following:
            await self._follow()

    async def _follow(self) -> None:
        self._chains.clear()  # a cache of an earlier tenure as sequencer: heads moved on since
        edge = await self.store.load_edge()
        head = await self.store.latest_head()
        if edge is None or head is None or head.size > edge["size"]:
            return  # nothing tiled and signed yet, or the head's edge not read yet: wait
        if edge["size"] == self.size and head == self.head:
            return  # (the same size with another head: a new key signed it, take that one)
        try:
            tree = self.tree.advanced(edge["size"], edge["levels"])
        except BadEdge as exc:
            raise self._corrupted(str(exc)) from exc
        before, self.tree, self.head = (self.tree, self.head), tree, head
        try:
            await self._check_head()
        except LogCorrupted:
            self.tree, self.head = before
            raise
        self.stream_last = int(edge["stream_last"])
        self._chains.clear()  # the sequencer moved them on
        self.loaded = True

    async def fill_tile_files(self, stop: asyncio.Event) -> None:
        """Once the log is loaded or followed, write to the tile files (DMP_TILE_DIR) the full
        tiles of that tree they lack, from the database; then wait for stop. Tiles completed
        after that are written by the appender, or by this replica as it reads them."""
        if self._files is None:
            await stop.wait()
            return
        while not self.loaded:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                return
        started = time.perf_counter()
        try:
            written = await self.tree.fill_files()
        except TileError as exc:  # proofs will say it too: the database is not the tree's
            log.error("tile_files_fill_stopped", error=str(exc))
        else:
            log.info(
                "tile_files_filled",
                entries=self.size,
                tiles=written,
                seconds=round(time.perf_counter() - started, 2),
            )
        await stop.wait()

    async def load(self) -> None:
        """Read the stored edge and the newest signed head — not the log: what follows the
        edge (a crash between a chunk and its tiles) is hashed again, and a log from before
        tiles is verified whole and tiled, once. For the replica that appends."""
        started = time.perf_counter()
        await self.settle(quiet=True)  # a derivation still under way ends before the edge is read
        now = rfc3339(self.clock.now())
        if not self.keys[self.signer.key_id].covers(now):
            raise ValueError(
                f"the signing key's period ({self.keys[self.signer.key_id].period()}) does not "
                f"cover now ({now}): the heads it signed would not verify"
            )
        edge = await self.store.load_edge()
        if edge is None and await self.store.any_chunk():
            log.info("audit_log_tiling")
            state = await scan(self.store, self.keys)
            if state.problem is not None:
                raise self._corrupted(str(state.problem))
        try:
            self.tree = self._tree(edge["size"], edge["levels"]) if edge else self._tree()
        except BadEdge as exc:
            raise self._corrupted(str(exc)) from exc
        self.stream_last = int(edge["stream_last"]) if edge else 0
        self._chains.clear()
        self._unstored.clear()
        self._chunks.clear()
        replayed = await self._catch_up()
        self.stored_last = self.stream_last
        self.head = await self.store.latest_head()
        await self._check_head()
        self._stale = False
        self.loaded = True
        log.info(
            "audit_log_loaded",
            entries=self.size,
            signed=self.head.size if self.head else None,
            replayed=replayed,
            seconds=round(time.perf_counter() - started, 3),
        )
        # a new key signs the current tree at once: the newest head is always the current key's
        await self.sign(
            force=self.head is None
            or self.head.size < self.size
            or self.head.key_id != self.signer.key_id
        )

    async def _catch_up(self) -> int:
        """Tile the chunks stored after the edge; returns how many entries that was."""
        before = self.size
        async for doc in self.store.chunks_from(self.size):  # each at exactly the next seq
            try:
                entries = unpack(doc["data"], doc["count"])
            except (ValueError, zstandard.ZstdError) as exc:
                raise self._corrupted(f"the chunk at {doc['_id']} is unreadable") from exc
            batch: list[Row] = []
            for data in entries:
                found = HEADS.match(data)
                if found is None or int(found[1]) != self.size + len(batch):
                    raise self._corrupted(f"the chunk at {doc['_id']} holds an entry out of place")
                batch.append((data, leaf_hash(data), found[2].decode(), int(found[3])))
            await self._derive(doc["_id"], batch, int(doc["stream_last"]))  # stored before the next
        return self.size - before

    async def _check_head(self) -> None:
        """The newest signed head must be signed by one of the log's keys within that key's
        period (keys.py: the current key, or a retired one before a rotation's first start) and
        be the stored tree's root at its size."""
        head = self.head
        if head is None:
            return
        problem = head_problem(head, self.keys)
        if problem is not None:
            raise self._corrupted(problem)
        if head.size > self.size:
            raise self._corrupted(
                f"a signed tree head covers {head.size} entries but the log holds {self.size}"
            )
        try:
            root = await self.tree.root_at(head.size)
        except TileError as exc:
            raise self._corrupted(str(exc)) from exc
        if root.hex() != head.root_hash:
            raise self._corrupted(f"the tree head of size {head.size} does not match the tiles")

    def _corrupted(self, problem: str) -> LogCorrupted:
        log.critical("audit_log_corrupted", problem=problem)
        return LogCorrupted(problem)

    # append ----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.tree.size

    async def append(self, records: Sequence[Record], *, behind: bool = False) -> int:
        """Append the records not yet in the log, in stream order; returns how many, once all
        that follows from their chunk is stored too — or, `behind`, once the chunk is stored
        (the rest is stored while the caller fetches its next batch: `settle` waits for it)."""
        async with self.write_lock:
            if self._stale:
                await self.load()
            fresh = self._after_watermark(records)
            if not fresh:
                return 0
            self._check_sequencer()
            stream_last = fresh[-1].stream_seq
            events = await self._first_sightings(fresh)
            batch = await self._entries(events)
            if not batch and self._derived():
                self.stored_last = stream_last  # nothing to store (duplicates), nothing pending
            if batch:
                first = self.size
                self._check_sequencer()  # again: the lease may have lapsed meanwhile
                await self.store.write_chunk(first, [b[0] for b in batch], stream_last)
                # One batch's derivation at most behind the chunks: the one before is done
                # first, so edges are stored in order and memory stays bounded.
                try:
                    await self.settle()
                except BaseException:
                    self._stale = True  # this chunk is stored, not derived: reload first
                    raise
                self._behind = asyncio.create_task(self._derive(first, batch, stream_last))
                if not behind:
                    await self.settle()
            self.stream_last = stream_last
            await self._maybe_sign()
            return len(batch)

    def _derived(self) -> bool:
        """No derivation under way or failed: every stored chunk's trail is stored."""
        behind = self._behind
        if self._stale:
            return False
        if behind is None:
            return True
        return behind.done() and not behind.cancelled() and behind.exception() is None

    async def settle(self, quiet: bool = False) -> None:
        """Wait until what follows from every stored chunk is stored (tiles, trail, edge).
        A failure there marks the log stale (the next append reloads) and is raised unless
        `quiet`."""
        behind, self._behind = self._behind, None
        if behind is None:
            return
        try:
            await asyncio.shield(behind)
        except asyncio.CancelledError:
            if not behind.done():
                self._behind = behind  # this caller was cancelled, not the derivation
            raise
        except Exception:
            if not quiet:
                raise

    def _check_sequencer(self) -> None:
        if not self.may_append():
            raise NotSequencer("this replica does not hold the sequencer's lease")

    def _after_watermark(self, records: Sequence[Record]) -> list[Record]:
        ordered = sorted(records, key=lambda r: r.stream_seq)
        fresh = [r for r in ordered if r.stream_seq > self.stream_last]
        if fresh and fresh[0].stream_seq > self.stream_last + 1 and self.stream_last:
            log.warning(
                "audit_stream_gap",
                after=self.stream_last,
                resumed_at=fresh[0].stream_seq,
            )
        return fresh

    async def _first_sightings(
        self, records: Sequence[Record]
    ) -> list[tuple[Record, envelope_pb2.Envelope]]:
        """The records whose event id the log has not seen (idempotent on the event id)."""
        seen: set[str] = set()
        candidates: list[tuple[Record, envelope_pb2.Envelope]] = []
        for record in records:
            event = record.event
            if event is None:
                log.error("audit_record_undecodable", stream_seq=record.stream_seq)
                continue
            if event.WhichOneof("payload") != "audit_record" or not event.id:
                log.error("audit_record_unexpected", stream_seq=record.stream_seq, type=event.type)
                continue
            if event.id in seen:
                continue
            seen.add(event.id)
            candidates.append((record, event))
        claims = [(e.id, r.stream_seq) for r, e in candidates]
        taken: dict[str, int] = {}
        for part in await asyncio.gather(*map(self.store.claim_events, _parts(claims))):
            taken.update(part)
        fresh = []
        for record, event in candidates:
            claimed_by = taken.get(event.id)
            if claimed_by is None or claimed_by == record.stream_seq:
                fresh.append((record, event))
            elif claimed_by > self.stream_last:
                # claimed by an attempt that never reached the log (it crashed): ours now
                await self.store.reclaim_event(event.id, record.stream_seq)
                fresh.append((record, event))
            else:
                log.info("audit_record_duplicate", event_id=event.id)
        return fresh

    async def _entries(self, events: Sequence[tuple[Record, envelope_pb2.Envelope]]) -> list[Row]:
        """(entry bytes, leaf hash, ins, n) for each event, chained to each dossier's last entry."""
        named = [(clean_ins(event.patient_ins), record, event) for record, event in events]
        dossiers = {ins for ins, _, _ in named if ins}
        # a dossier whose newest entries are still being stored: its head is the one kept here
        # (taken before the lookups: the derivation may end, and forget it, meanwhile)
        unstored = {ins: self._unstored[ins] for ins in dossiers & self._unstored.keys()}
        heads = await self.chain_heads(dossiers - unstored.keys())
        heads.update(unstored)
        batch: list[Row] = []
        for seq, (ins, _, event) in enumerate(named, self.size):
            last = heads.get(ins) if ins else None
            n, prev = (0, "") if last is None else (last[0] + 1, last[1].hex())
            data = entry_of(event, seq, ins, n, prev).to_bytes()
            leaf = leaf_hash(data)
            if ins:
                heads[ins] = (n, leaf)
            batch.append((data, leaf, ins, n))
        return batch

    async def chain_heads(self, dossiers: set[str]) -> dict[str, tuple[int, bytes]]:
        """(n, leaf) of each dossier's newest entry, for those that have one. A replica that
        does not append reads the heads the sequencer stored, and keeps none: a cache there
        would show a trail as it was when first read."""
        appending = self.may_append()
        heads: dict[str, tuple[int, bytes]] = {}
        missing = []
        for ins in dossiers:
            cached = self._chains.get(ins) if appending else None
            if cached is None:
                missing.append(ins)
            else:
                heads[ins] = cached
        for ins, found in zip(
            missing, await asyncio.gather(*(self.store.chain_head(i) for i in missing)), strict=True
        ):
            if found is None:
                continue
            if appending:
                self._remember_chain(ins, found)
                found = self._chains.get(ins, found)  # a newer head cached meanwhile wins
            heads[ins] = found
        return heads

    def _derive(
        self, first: int, batch: Sequence[Row], stream_last: int
    ) -> Coroutine[None, None, None]:
        """What follows from a stored chunk: the tree extended in memory now, and the writes
        to await — the tiles it completes, each dossier entry's place in its trail, then the
        edge (idempotent: a crash anywhere in them is redone at start)."""
        tiles = self.tree.extend([row[1] for row in batch])
        edge = [bytes(r) for r in self.tree.edge]
        trail = [
            {"_id": seq, "ins": ins, "n": n, "leaf": leaf, "chunk": first}  # bytes: BSON binary
            for seq, (_, leaf, ins, n) in enumerate(batch, first)
            if ins
        ]
        heads = {ins: (n, leaf) for _, leaf, ins, n in batch if ins}
        self._unstored.update(heads)
        self._remember_chunk(first, [row[0] for row in batch])
        self.stream_last = stream_last
        return self._store_derived(tiles, trail, self.size, stream_last, edge, heads)

    async def _store_derived(
        self,
        tiles: list[tuple[TileKey, bytes]],
        trail: list[dict[str, object]],
        size: int,
        stream_last: int,
        edge: list[bytes],
        heads: dict[str, tuple[int, bytes]],
    ) -> None:
        try:
            # independent writes, side by side: the database works on them in parallel
            await asyncio.gather(
                self.store.write_tiles(tiles), *map(self.store.write_trail, _parts(trail))
            )
            await self.store.save_edge(size, stream_last, edge)
        except BaseException:
            self._stale = True  # the chunk is stored: the next append re-reads
            raise
        self.stored_last = max(self.stored_last, stream_last)
        for ins, head in heads.items():
            self._remember_chain(ins, head)
            if self._unstored.get(ins) == head:
                del self._unstored[ins]  # (a later batch's head stays until stored)

    def _remember_chain(self, ins: str, head: tuple[int, bytes]) -> None:
        """Cache a dossier's chain head; never an older one over a newer (a reader's lookup
        may return after the appender stored and cached the dossier's next entry)."""
        cached = self._chains.get(ins)
        if cached is None or cached[0] < head[0]:
            self._chains[ins] = head
        self._chains.move_to_end(ins)
        while len(self._chains) > self.settings.chain_cache:
            self._chains.popitem(last=False)

    # tree heads ------------------------------------------------------------------------

    async def _maybe_sign(self) -> None:
        latest = self.head.size if self.head else -1
        due = time.monotonic() - self._signed_at >= self.settings.checkpoint_interval_seconds
        if self.size - latest >= self.settings.checkpoint_every_entries or (
            due and self.size > latest
        ):
            await self.sign()

    async def tick(self) -> None:
        """Called every so often: sign a head if entries arrived since the last one (after
        redoing from the edge what a failed derivation left: no record may come to do it)."""
        async with self.write_lock:
            if self._stale:
                await self.load()
            await self._maybe_sign()

    async def sign(self, force: bool = False) -> TreeHead:
        if self.head and self.head.size == self.size and not force:
            return self.head
        await self.settle()  # a signed tree's tiles and edge are stored before its head
        if self._stale:
            raise LogStale("what follows from a stored chunk is not stored: reload first")
        head = self.signer.sign(self.size, self.tree.root(), self.clock.now())
        latest = self.head
        if latest is not None and latest.size == head.size and latest.key_id != head.key_id:
            # the key rotated with no entry since: the new key's head of the same tree takes
            # the old one's place (a size has one stored head; the old one verified at load)
            if not await self.store.replace_head(head):
                raise LogCorrupted(f"the tree head of size {head.size} changed while replaced")
            self.head = head
        else:
            await self.store.save_head(head)
            if latest is None or latest.size < head.size:
                self.head = head
        self._signed_at = time.monotonic()
        return head

    def checkpoint(self) -> TreeHead:
        if self.head is None:
            raise RuntimeError("the log has not signed a head yet")
        return self.head

    def checkpoint_note(self) -> bytes:
        """The newest signed head as a C2SP checkpoint note, signed with the same key (its
        bytes depend on the size and root only: signed once per head)."""
        head = self.checkpoint()
        if self._note[0] != head.size:
            self._note = (head.size, self.note_at(head))
        return self._note[1]

    def note_at(self, head: TreeHead) -> bytes:
        """An earlier signed head as its checkpoint note (Ed25519 is deterministic: the same
        bytes the log served when that head was the newest)."""
        if head.size == self._note[0]:
            return self._note[1]
        text = Checkpoint(self.notes.name, head.size, bytes.fromhex(head.root_hash)).text()
        return self.notes.sign(text)

    async def tile(self, tile: Tile) -> bytes | None:
        """A hash tile of the newest signed tree (None if that tree does not hold it): what is
        published is what a signed head covers."""
        return await self.tree.tile(tile, self.checkpoint().size)

    # reads -----------------------------------------------------------------------------

    async def reach(self, stream_seq: int, within: float) -> bool:
        """Wait, `within` seconds at most, until the log holds every record of the AUDIT stream
        up to `stream_seq`, their trails stored: a trail read after that shows every access
        recorded before the read began. On the replica that appends, its linger is cut short;
        another replica watches the edge, which the sequencer stores after a chunk's trail (at
        most the linger later). True once held; False if the time ran out first."""
        deadline = time.monotonic() + within
        while True:
            if self.may_append():
                if self.stored_last >= stream_seq:
                    return True
                self.hurry.set()
                pause = 0.005
            else:
                edge = await self.store.load_edge()
                if edge is not None and int(edge["stream_last"]) >= stream_seq:
                    return True
                pause = 0.02
            if time.monotonic() + pause > deadline:
                return False
            await asyncio.sleep(pause)

    async def trail_length(self, ins: str) -> int:
        """How many entries the dossier's trail holds."""
        head = (await self.chain_heads({ins})).get(ins)
        return 0 if head is None else head[0] + 1

    async def trail_page(self, ins: str, before: int, limit: int) -> list[tuple[int, int, int]]:
        """(n, seq, chunk) of the dossier's entries before its `before`-th, newest first."""
        docs = await self.store.trail_page(ins, before, limit)
        return [(int(d["n"]), int(d["_id"]), int(d["chunk"])) for d in docs]

    async def entry(self, seq: int, chunk_first: int) -> bytes:
        """Entry `seq`, held by the chunk starting at `chunk_first`."""
        chunk = self._chunks.get(chunk_first)
        if chunk is None:
            chunk = await self.store.chunk(chunk_first)
            if chunk is None:
                raise LogCorrupted(f"the chunk at {chunk_first} has gone")
            self._remember_chunk(chunk_first, chunk)
        else:
            self._chunks.move_to_end(chunk_first)
        if not 0 <= seq - chunk_first < len(chunk):
            raise LogCorrupted(f"entry {seq} is not in the chunk at {chunk_first}")
        return chunk[seq - chunk_first]

    def _remember_chunk(self, first: int, entries: list[bytes]) -> None:
        self._chunks[first] = entries
        while len(self._chunks) > self.settings.chunk_cache:
            self._chunks.popitem(last=False)


T = TypeVar("T")


def _parts(items: Sequence[T]) -> list[Sequence[T]]:
    """`items` cut into at most WRITERS runs of nearly equal length and of PART_MIN at least
    (but the last), for concurrent inserts."""
    step = max(PART_MIN, -(-len(items) // WRITERS))
    return [items[i : i + step] for i in range(0, len(items), step)]


Row = tuple[bytes, bytes, str, int]  # entry bytes, leaf hash, ins ("" for none), n in its chain


def entry_of(event: envelope_pb2.Envelope, seq: int, ins: str, n: int, prev: str) -> Entry:
    record = event.audit_record
    raw_ins = event.patient_ins
    query = record.query if raw_ins == ins else f"{record.query} ins={raw_ins!r}".strip()
    return Entry(
        seq=seq,
        ins=ins,
        n=n,
        prev=prev,
        at=rfc3339_of(event.occurred_at.seconds, event.occurred_at.nanos),
        event_id=event.id,
        source=event.source,
        request_id=event.trace.request_id,
        actor_kind=event.actor.kind,
        actor_id=event.actor.id,
        actor_name=record.actor_name,
        actor_profession=event.actor.profession,
        action=record.action,
        document_id=record.document_id,
        query=query,
        outcome=record.outcome,
        mode=record.mode or "normal",
        reason=record.reason,
    )
