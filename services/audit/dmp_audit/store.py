"""Audit's collections: the log's chunks, the event-id index, the signed tree heads, and the
attending physicians it mirrors from consent's events.

- `chunks`: the log itself. One document per appended batch: `_id` the seq of its first entry,
  `count`, `stream_last` (the JetStream sequence of its last record) and `data`, the batch's
  canonical entries joined by newlines (canonical JSON never holds a raw newline),
  zstd-compressed (level 3: a third smaller than zlib's fastest, three times faster to read).
  A chunk is written once and never changed.
- `events`: `_id` = event id, `stream_seq` of the record that carried it — what makes the log
  idempotent on the event id beyond JetStream's duplicate window.
- `tiles`: the Merkle tree's full hash tiles (c2sp.org/tlog-tiles), `_id` = level·2^48 + index,
  `hashes` the tile's 256 hashes (8,192 bytes). Written once, like chunks.
- `edge`: one document, `_id` 0: the size the stored tree covers, the stream sequence of its
  last record and, per level, the rightmost (partial) tile's hashes. Replaced after each
  append: with the tiles it is the whole tree, and what a restart reads instead of the log.
- `trail`: one document per entry about a dossier, `_id` = seq: `ins`, `n` (its place in the
  dossier's chain), `leaf` (its leaf hash) and `chunk` (the chunk that holds it) — a dossier's
  access log is read newest first from here, and its chain's head is its largest `n`.
- `checkpoints`: the signed tree heads, `_id` = tree size; `latest_head` holds a copy of the
  newest (one document), where a start and a following replica read it.
- `attending`: per dossier, who may read its whole trace besides the patient: the attending
  physician's RPPS as consent last announced it (and whom the patient blocked), and the legal
  representatives with the dossier's status, from the dossier's lifecycle events. A purge
  empties it, leaving only when it happened (`purged_order`), so that no event older than the
  purge brings any of it back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import zstandard
from bson import Binary
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from dmp_audit.entry import TreeHead
from dmp_audit.tiles import TileKey
from dmp_kit.mongo import Store, insert_all

Document = dict[str, Any]
LEVEL_SHIFT = 48  # a tile's _id: level << 48 | index (2^48 tiles of 256 hashes per level)
EDGE_ID = 0
LATEST_ID = 0


def pack(entries: Sequence[bytes]) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(b"\n".join(entries))


def unpack_text(data: bytes) -> bytes:
    """The chunk's entries joined by newlines (zstandard.ZstdError on damaged data)."""
    return zstandard.ZstdDecompressor().decompress(data)


def unpack(data: bytes, count: int) -> list[bytes]:
    entries = unpack_text(data).split(b"\n")
    if len(entries) != count:
        raise ValueError(f"the chunk holds {len(entries)} entries, not {count}")
    return entries


class ChunkTaken(RuntimeError):
    """Another writer appended at this position: our view of the log is stale."""


class AuditStore(Store):
    @cached_property
    def chunks(self) -> Any:
        return self.db["chunks"]

    @cached_property
    def events(self) -> Any:
        return self.db["events"]

    @cached_property
    def checkpoints(self) -> Any:
        return self.db["checkpoints"]

    @cached_property
    def attending(self) -> Any:
        return self.db["attending"]

    @cached_property
    def tiles(self) -> Any:
        return self.db["tiles"]

    @cached_property
    def edge(self) -> Any:
        return self.db["edge"]

    @cached_property
    def trail(self) -> Any:
        return self.db["trail"]

    @cached_property
    def latest(self) -> Any:
        return self.db["latest_head"]

    @cached_property
    def lease(self) -> Any:
        """Who appends: the sequencer's lease (dmp_kit.lease)."""
        return self.db["lease"]

    async def ensure_indexes(self) -> None:
        await self.trail.create_index([("ins", ASCENDING), ("n", DESCENDING)])
        await self.ensure_cosignature_index()

    # the log --------------------------------------------------------------------------

    async def claim_events(self, records: Sequence[tuple[str, int]]) -> dict[str, int]:
        """Record (event id, stream seq) pairs; returns, for ids already recorded, the stream
        seq that recorded them (which may be this very record, from an attempt that crashed)."""
        docs = [{"_id": event_id, "stream_seq": seq} for event_id, seq in records]
        taken: dict[str, int] = {}
        for index in await insert_all(self.events, docs):
            event_id = docs[index]["_id"]
            found = await self.events.find_one({"_id": event_id})
            if found is not None:
                taken[event_id] = int(found["stream_seq"])
        return taken

    async def reclaim_event(self, event_id: str, stream_seq: int) -> None:
        await self.events.update_one({"_id": event_id}, {"$set": {"stream_seq": stream_seq}})

    async def write_chunk(self, first: int, entries: Sequence[bytes], stream_last: int) -> None:
        doc = {
            "_id": first,
            "count": len(entries),
            "stream_last": stream_last,
            "data": Binary(pack(entries)),
        }
        try:
            await self.chunks.insert_one(doc)
        except DuplicateKeyError as exc:
            raise ChunkTaken(f"a chunk already starts at {first}") from exc

    async def chunk(self, first: int) -> list[bytes] | None:
        doc = await self.chunks.find_one({"_id": first})
        return None if doc is None else unpack(doc["data"], doc["count"])

    async def chunk_count(self) -> int:
        return int(await self.chunks.estimated_document_count())

    async def scan_chunks(self) -> AsyncIterator[Document]:
        """Every chunk, in log order, as stored."""
        # small batches: the next one is being prepared while this one is checked
        async for doc in self.chunks.find({}, sort=[("_id", 1)], batch_size=8):
            yield doc

    async def any_chunk(self) -> bool:
        return await self.chunks.find_one({}, projection={"_id": 1}) is not None

    async def chunks_from(self, first: int) -> AsyncIterator[Document]:
        """The chunks from the one starting at `first` on, in log order: each looked up by its
        `_id` (the only lookup FerretDB serves from an index), until one is missing."""
        while (doc := await self.chunks.find_one({"_id": first})) is not None:
            yield doc
            first += int(doc["count"])

    # the tree as tiles, and each dossier's trail -----------------------------------------

    async def write_tiles(self, tiles: Sequence[tuple[TileKey, bytes]]) -> None:
        """Store full tiles; one already stored must hold the same hashes."""
        docs = [{"_id": _tile_id(key), "hashes": Binary(data)} for key, data in tiles]
        for index in await insert_all(self.tiles, docs):
            doc = docs[index]
            found = await self.tiles.find_one({"_id": doc["_id"]})
            if found is None or bytes(found["hashes"]) != bytes(doc["hashes"]):
                raise ChunkTaken(f"another tree's tile is stored as {doc['_id']}")

    async def load_tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        # One equality lookup each, side by side: FerretDB serves `_id` equality from the
        # primary key but answers `$in` by reading the whole collection.
        docs = await asyncio.gather(*(self.tiles.find_one({"_id": _tile_id(k)}) for k in keys))
        return {key: bytes(doc["hashes"]) for key, doc in zip(keys, docs, strict=True) if doc}

    async def save_edge(self, size: int, stream_last: int, edge: Sequence[bytes]) -> None:
        """The tree's right edge after `size` entries; never moves back (ChunkTaken if a
        larger one is stored: another writer is ahead)."""
        doc = {"size": size, "stream_last": stream_last, "levels": [Binary(r) for r in edge]}
        try:
            await self.edge.update_one(
                {"_id": EDGE_ID, "size": {"$lte": size}}, {"$set": doc}, upsert=True
            )
        except DuplicateKeyError as exc:
            raise ChunkTaken(f"a tree larger than {size} entries is stored") from exc

    async def load_edge(self) -> Document | None:
        return await self.edge.find_one({"_id": EDGE_ID})

    async def write_trail(self, docs: Sequence[Document]) -> None:
        """Each dossier entry's place in its dossier's trail (idempotent)."""
        await insert_all(self.trail, docs)  # a duplicate is the same entry's, stored before

    async def chain_head(self, ins: str) -> tuple[int, bytes] | None:
        """(n, leaf hash) of the dossier's newest entry, None when it has none."""
        doc = await self.trail.find_one(
            {"ins": ins}, sort=[("n", -1)], projection={"n": 1, "leaf": 1}
        )
        return None if doc is None else (int(doc["n"]), bytes(doc["leaf"]))

    async def trail_page(self, ins: str, before: int, limit: int) -> list[Document]:
        """The dossier's entries with n < before, newest first: {_id (seq), n, chunk}."""
        cursor = self.trail.find(
            {"ins": ins, "n": {"$lt": before}},
            sort=[("n", -1)],
            limit=limit,
            projection={"n": 1, "chunk": 1},
        )
        return [doc async for doc in cursor]

    # tree heads ----------------------------------------------------------------------

    async def save_head(self, head: TreeHead) -> None:
        doc = _head_doc(head)
        try:
            await self.checkpoints.insert_one(doc)
        except DuplicateKeyError:
            return  # this size is signed already; the first head stays
        await self._point_to(doc)

    async def _point_to(self, head: Document) -> None:
        """The newest head, copied where one point read finds it (sorting every stored head
        is not one, on FerretDB); it never moves back (a head of the same size replaces it:
        the same tree signed by a new key)."""
        with contextlib.suppress(DuplicateKeyError):
            await self.latest.update_one(
                {"_id": LATEST_ID, "size": {"$lte": head["size"]}},
                {"$set": {k: v for k, v in head.items() if k != "_id"}},
                upsert=True,
            )

    async def latest_head(self) -> TreeHead | None:
        doc = await self.latest.find_one({"_id": LATEST_ID})
        if doc is None:  # a log from before the pointer: found once the slow way
            doc = await self.checkpoints.find_one({}, sort=[("_id", -1)])
            if doc is None:
                return None
            await self._point_to(doc)
        return head_of(doc)

    async def replace_head(self, head: TreeHead) -> bool:
        """A head of the same tree (size and root) by another key takes the stored one's place
        (the key rotated); False if no head of that tree is stored."""
        doc = _head_doc(head)
        done = await self.checkpoints.replace_one(
            {"_id": head.size, "root_hash": head.root_hash}, doc
        )
        if done.matched_count:
            await self._point_to(doc)
        return bool(done.matched_count)

    async def heads(self) -> list[tuple[Any, TreeHead]]:
        """Every stored head with the `_id` it is stored under, smallest first."""
        out = []
        async for doc in self.checkpoints.find({}, sort=[("_id", 1)]):
            out.append((doc["_id"], head_of(doc)))
        return out

    # attending physicians ---------------------------------------------------------------

    async def note_care_change(self, ins: str, change: str, rpps: str, order: int) -> None:
        """Mirror consent's `attending_physician`, `blocked`, `authorized` and `removed` changes;
        each field keeps its newest value (by `order`) whatever order events arrive in."""
        async with self.locks.hold("attending", ins):
            doc = await self.attending.find_one({"_id": ins}) or {"_id": ins}
            if doc.get("purged_order", -1) >= order:
                return  # about a dossier purged since
            if change == "attending_physician":
                if doc.get("gp_order", -1) >= order:
                    return
                doc.update(gp=rpps, gp_order=order)
            else:
                blocked = doc.setdefault("blocked", {})
                if blocked.get(rpps, [False, -1])[1] >= order:
                    return
                blocked[rpps] = [change == "blocked", order]
            await self.attending.replace_one({"_id": ins}, doc, upsert=True)

    async def note_dossier(
        self, ins: str, is_open: bool, representatives: list[str] | None, order: int
    ) -> None:
        """Mirror the dossier's status and, from its opening, its legal representatives
        (None: the event does not name them); the newest event wins."""
        async with self.locks.hold("attending", ins):
            doc = await self.attending.find_one({"_id": ins}) or {"_id": ins}
            if max(doc.get("purged_order", -1), doc.get("status_order", -1)) >= order:
                return
            doc.update(open=is_open, status_order=order)
            if representatives is not None:
                doc["representatives"] = representatives
            await self.attending.replace_one({"_id": ins}, doc, upsert=True)

    async def drop_representatives(self, ins: str, former: list[str]) -> None:
        """A minor came of age: `former` read their trace no more. Kept as former, so that no
        event, late or not, gives it back (a dossier.opened delivered after this, say)."""
        async with self.locks.hold("attending", ins):
            # Kept even before the dossier's events: its opening may come after, naming them.
            doc = await self.attending.find_one({"_id": ins}) or {"_id": ins}
            known = doc.get("former_representatives", [])
            if set(former) <= set(known):
                return
            doc["former_representatives"] = sorted({*known, *former})
            doc["representatives"] = [r for r in doc.get("representatives", []) if r not in former]
            await self.attending.replace_one({"_id": ins}, doc, upsert=True)

    async def forget_dossier(self, ins: str, order: int) -> None:
        """A purge: nothing that let anyone read the trace is kept, only when it happened."""
        async with self.locks.hold("attending", ins):
            doc = await self.attending.find_one({"_id": ins}) or {}
            if doc.get("purged_order", -1) >= order:
                return
            await self.attending.replace_one(
                {"_id": ins}, {"_id": ins, "purged_order": order}, upsert=True
            )

    async def readers(self, ins: str) -> TraceReaders:
        """Who besides the patient reads the dossier's whole trace, and since when."""
        doc = await self.attending.find_one({"_id": ins}) or {}
        gp = str(doc.get("gp") or "")
        if doc.get("blocked", {}).get(gp, [False])[0] or not doc.get("open"):
            gp = ""  # rule 5: blocked means refused everything; rule 13: closed, nobody reads
        representatives = (
            frozenset(doc.get("representatives", []))
            - frozenset(doc.get("former_representatives", []))
            if doc.get("open")
            else None
        )
        return TraceReaders(gp, representatives or frozenset(), doc.get("purged_order"))

    # witnesses' cosignatures ---------------------------------------------------------------
    # `cosignatures`: one document per checkpoint and witness, `_id` "<size> <verifier key>":
    # `size`, `root` (the checkpoint's root hash), `witness` (its verifier key), `timestamp`
    # and `line`, the cosignature line as the witness wrote it. A witness's newer cosignature of
    # the same checkpoint replaces its older one.

    @cached_property
    def cosignatures(self) -> Any:
        return self.db["cosignatures"]

    async def ensure_cosignature_index(self) -> None:
        await self.cosignatures.create_index([("size", DESCENDING)])

    async def head_at(self, size: int) -> TreeHead | None:
        doc = await self.checkpoints.find_one({"_id": size})
        return None if doc is None else head_of(doc)

    async def save_cosignature(
        self, size: int, root: bytes, witness: str, timestamp: int, line: str
    ) -> None:
        doc = {
            "_id": f"{size} {witness}",
            "size": size,
            "root": Binary(root),
            "witness": witness,
            "timestamp": timestamp,
            "line": line,
        }
        try:
            await self.cosignatures.insert_one(doc)
        except DuplicateKeyError:
            await self.cosignatures.replace_one(
                {"_id": doc["_id"], "timestamp": {"$lt": timestamp}}, doc
            )

    async def cosignature_lines(self, size: int, witnesses: Sequence[str]) -> list[str]:
        """The lines of the witnesses `witnesses` (verifier keys) over the checkpoint of `size`,
        in the order they are listed (by size alone: FerretDB scans a collection for $in)."""
        found = {
            doc["witness"]: str(doc["line"]) async for doc in self.cosignatures.find({"size": size})
        }
        return [found[w] for w in witnesses if w in found]

    async def newest_cosigned(self, witnesses: Sequence[str]) -> int | None:
        """The largest tree size one of the witnesses `witnesses` cosigned, if any (a witness
        no longer configured is skipped)."""
        known = set(witnesses)
        if not known:
            return None
        async for doc in self.cosignatures.find({}, sort=[("size", DESCENDING)]):
            if doc["witness"] in known:
                return int(doc["size"])
        return None


@dataclass(frozen=True)
class TraceReaders:
    attending_physician: str  # "" when none (or blocked)
    representatives: frozenset[str]  # only while the dossier is open (rule 13)
    purged_order: int | None  # microseconds since the epoch of the last purge of this INS


def _tile_id(key: TileKey) -> int:
    return key[0] << LEVEL_SHIFT | key[1]


def _head_doc(head: TreeHead) -> Document:
    return {
        "_id": head.size,
        "size": head.size,
        "root_hash": head.root_hash,
        "timestamp": head.timestamp,
        "key_id": head.key_id,
        "signature": head.signature,
    }


def head_of(doc: Document) -> TreeHead:
    return TreeHead(
        size=int(doc.get("size", -1)),
        root_hash=str(doc.get("root_hash", "")),
        timestamp=str(doc.get("timestamp", "")),
        key_id=str(doc.get("key_id", "")),
        signature=str(doc.get("signature", "")),
    )
