"""The log on a real MongoDB-compatible server: append, idempotence, reload, tamper detection."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import itertools
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from dmp.audit.v1 import audit_pb2
from dmp_audit import merkle
from dmp_audit.api import AuditServicer
from dmp_audit.config import AuditSettings
from dmp_audit.entry import Entry, TreeHeadSigner, raw_public_key
from dmp_audit.log import AuditLog, LogCorrupted, NotSequencer, Record
from dmp_audit.store import AuditStore, ChunkTaken, pack, unpack
from dmp_audit.tiles import TamperedTile, TileFiles
from dmp_audit.verify import scan
from dmp_kit.auth import Principal, current_principal
from dmp_kit.clock import ManualClock
from dmp_kit.errors import Unavailable
from dmp_kit.events import audit_event
from dmp_stack.testing import CommandsSent, Infra, make_ins, make_rpps

pytestmark = pytest.mark.asyncio(loop_scope="session")

SIGNER = TreeHeadSigner(hashlib.sha256(b"test signing seed").digest())
KEYS = {SIGNER.key_id: SIGNER.public_key}
CLOCK = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))


def new_log(store: AuditStore, **settings: Any) -> AuditLog:
    return AuditLog(store, SIGNER, CLOCK, AuditSettings(env="dev", **settings))


def record(stream_seq: int, ins: str, action: str = "read", actor: str = "") -> Record:
    who = Principal(kind="professional", subject="s", rpps=actor or make_rpps(), profession="10")
    event = audit_event(
        source="dossier", clock=CLOCK, caller=who, patient_ins=ins, action=action, outcome="success"
    )
    return Record(stream_seq, event)


async def test_records_become_chained_entries_in_stream_order(store: AuditStore) -> None:
    log = new_log(store)
    await log.load()
    a, b = make_ins(), make_ins()
    records = [record(s, a if s % 3 else b) for s in range(1, 8)]
    assert await log.append(list(reversed(records))) == 7  # stream order, whatever the batch
    entries = [Entry.from_bytes(await log.entry(seq, 0)) for seq in range(7)]
    assert [e.event_id for e in entries] == [r.event.id for r in records if r.event]
    assert [e.seq for e in entries] == list(range(7))
    trail_a = [e for e in entries if e.ins == a]
    assert [e.n for e in trail_a] == list(range(len(trail_a)))
    for before, after in itertools.pairwise(trail_a):
        assert after.prev == merkle.leaf_hash(before.to_bytes()).hex()
    page = await log.trail_page(a, await log.trail_length(a), 100)
    assert [seq for _, seq, _ in reversed(page)] == [e.seq for e in trail_a]
    assert trail_a[0].prev == ""


async def test_redelivered_and_duplicated_records_are_appended_once(store: AuditStore) -> None:
    log = new_log(store)
    await log.load()
    ins = make_ins()
    first = [record(s, ins) for s in range(1, 4)]
    assert await log.append(first) == 3
    assert await log.append(first) == 0  # redelivered: at or below the stream watermark
    # the same event published again later (past JetStream's duplicate window): a new stream seq
    again = Record(10, first[1].event)
    assert await log.append([again, again, record(11, ins)]) == 1
    assert log.size == 4
    assert log.stream_last == 11


async def test_an_attempt_that_crashed_before_its_chunk_leaves_nothing_behind(
    store: AuditStore,
) -> None:
    log = new_log(store)
    await log.load()
    ins = make_ins()
    crashed = [record(s, ins) for s in range(1, 4)]
    # the event ids were claimed, then the process died before the chunk was written
    await store.claim_events([(r.event.id, r.stream_seq) for r in crashed if r.event])
    restarted = new_log(store)
    await restarted.load()
    assert await restarted.append(crashed) == 3
    assert restarted.size == 3


async def test_a_reloaded_log_is_the_same_log(store: AuditStore) -> None:
    log = new_log(store, checkpoint_every_entries=5)
    await log.load()
    patients = [make_ins() for _ in range(4)]
    seq = 0
    for size in (3, 9, 1, 12):
        batch = []
        for _ in range(size):
            seq += 1
            batch.append(record(seq, random.choice([*patients, ""])))
        await log.append(batch)
    await log.sign()
    again = new_log(store)
    await again.load()
    assert again.size == log.size == 25
    assert again.tree.root() == log.tree.root()
    assert await again.chain_heads(set(patients)) == await log.chain_heads(set(patients))
    assert again.stream_last == 25
    assert again.head == log.head and log.head is not None and log.head.size == 25
    heads = [h.size for _, h in await store.heads()]
    assert {0, 12, 25} <= set(heads)  # every 5 entries: after the batches of 9 and 12


async def test_a_log_from_before_tiles_is_verified_whole_and_tiled_once(
    store: AuditStore,
) -> None:
    rng = random.Random(7)
    log = new_log(store, checkpoint_every_entries=40)
    await log.load()
    patients = [make_ins(rng) for _ in range(5)]
    for seq in range(1, 700, 7):
        await log.append([record(s, rng.choice([*patients, ""])) for s in range(seq, seq + 7)])
    await log.sign()
    pages = {ins: await store.trail_page(ins, 2**62, 1000) for ins in patients}
    for name in ("tiles", "edge", "trail"):  # what a log stored before tiles did not have
        await store.db.drop_collection(name)
    await store.ensure_indexes()
    tiled = new_log(store)
    await tiled.load()
    assert tiled.size == log.size and tiled.tree.root() == log.tree.root()
    assert await store.tiles.count_documents({}) == 2  # 700 entries: two full tiles of level 0
    assert {ins: await store.trail_page(ins, 2**62, 1000) for ins in patients} == pages
    for _ in range(20):
        size = rng.randint(1, log.size)
        seq = rng.randrange(size)
        assert await tiled.tree.inclusion_proof(seq, size) == await log.tree.inclusion_proof(
            seq, size
        )


async def test_a_log_that_does_not_verify_is_not_tiled(store: AuditStore) -> None:
    log = new_log(store)
    await log.load()
    await log.append([record(s, make_ins()) for s in range(1, 6)])
    await log.sign()
    await store.db.drop_collection("edge")  # as a log stored before tiles
    doc = await store.chunks.find_one({"_id": 0})
    entries = unpack(doc["data"], doc["count"])
    entries[2] = entries[2].replace(b'"action":"read"', b'"action":"create"')
    await store.chunks.update_one({"_id": 0}, {"$set": {"data": Binary(pack(entries))}})
    with pytest.raises(LogCorrupted, match=r"entry|tree head"):
        await new_log(store).load()


async def test_a_start_reads_the_edge_and_hashes_only_what_a_crash_left_after_it(
    store: AuditStore,
) -> None:
    log = new_log(store)
    await log.load()
    ins = make_ins()
    await log.append([record(s, ins) for s in range(1, 301)])
    edge = await store.load_edge()
    await log.append([record(s, ins) for s in range(301, 401)])
    # the process died after the second chunk, before its trail and edge were stored
    await store.edge.replace_one({"_id": 0}, edge)
    await store.trail.delete_many({"_id": {"$gte": 300}})
    again = new_log(store)
    await again.load()
    assert again.size == 400 and again.tree.root() == log.tree.root()
    assert again.stream_last == 400
    assert await again.trail_length(ins) == 400
    assert (await store.load_edge())["size"] == 400
    await again.append([record(401, ins)])
    entry = Entry.from_bytes(await again.entry(400, 400))
    assert (entry.n, entry.prev) == (400, merkle.leaf_hash(await again.entry(399, 300)).hex())


async def test_tiles_changed_in_the_database_are_caught_and_a_wrong_edge_refused(
    store: AuditStore,
) -> None:
    log = new_log(store)
    await log.load()
    await log.append([record(s, make_ins()) for s in range(1, 601)])
    await log.sign()
    good_tile = await store.tiles.find_one({"_id": 1})
    forged = bytearray(good_tile["hashes"])
    forged[100] ^= 1
    await store.tiles.update_one({"_id": 1}, {"$set": {"hashes": Binary(bytes(forged))}})
    again = new_log(store)
    await again.load()  # the edge still matches the head: tiles are checked as they are read
    with pytest.raises(TamperedTile, match="tile/0/001"):
        await again.tree.inclusion_proof(300, 600)
    assert len(await again.tree.inclusion_proof(100, 600)) == 10  # tile 0 is intact
    await store.tiles.replace_one({"_id": 1}, good_tile)
    again = new_log(store)
    await again.load()
    assert await again.tree.inclusion_proof(300, 600) == await log.tree.inclusion_proof(300, 600)
    edge = await store.load_edge()
    levels = list(edge["levels"])
    levels[0] = bytes(levels[0])[:-32]
    await store.edge.update_one({"_id": 0}, {"$set": {"levels": levels}})
    with pytest.raises(LogCorrupted, match="edge"):
        await new_log(store).load()
    assert "edge" in str((await scan(store, KEYS)).problem)
    levels = list(edge["levels"])
    levels[0] = bytes(32) + bytes(levels[0])[32:]  # the right width, a wrong hash
    await store.edge.update_one({"_id": 0}, {"$set": {"levels": levels}})
    assert "does not match the entries" in str((await scan(store, KEYS)).problem)
    with pytest.raises(LogCorrupted, match="does not match"):
        await new_log(store).load()


# --- 1,000 random tamperings, each applied directly in the database --------------------


class Tamperer:
    """Applies one random change an insider could make to the stored log, and undoes it."""

    def __init__(self, store: AuditStore, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self.chunks: dict[int, dict[str, Any]] = {}
        self.heads: dict[int, dict[str, Any]] = {}
        self.touched: list[tuple[Any, dict[int, dict[str, Any]], int]] = []

    async def snapshot(self) -> None:
        self.chunks = {d["_id"]: d async for d in self.store.chunks.find({})}
        self.heads = {d["_id"]: d async for d in self.store.checkpoints.find({})}

    def entries(self, chunk_id: int) -> list[bytes]:
        doc = self.chunks[chunk_id]
        return unpack(doc["data"], doc["count"])

    async def put_chunk(self, chunk_id: int, entries: list[bytes] | None) -> None:
        self.touched.append((self.store.chunks, self.chunks, chunk_id))
        await self.store.chunks.delete_one({"_id": chunk_id})
        if entries:
            doc = {
                **self.chunks[chunk_id],
                "count": len(entries),
                "data": Binary(pack(entries)),
            }
            await self.store.chunks.insert_one(doc)

    async def restore(self) -> None:
        for collection, originals, doc_id in self.touched:
            original = originals.get(doc_id)
            await collection.delete_one({"_id": doc_id})
            if original is not None:
                await collection.insert_one(original)
        self.touched.clear()

    async def apply(self) -> str:
        kind = self.rng.choice(
            ["flip", "flip_stored", "delete", "delete_chunk", "swap", "truncate", "head"]
        )
        ids = sorted(self.chunks)
        cid = self.rng.choice(ids)
        entries = self.entries(cid)
        if kind == "flip":
            i = self.rng.randrange(len(entries))
            e = bytearray(entries[i])
            e[self.rng.randrange(len(e))] ^= 1 << self.rng.randrange(8)
            entries[i] = bytes(e)
            await self.put_chunk(cid, entries)
        elif kind == "flip_stored":
            data = self.flipped(self.chunks[cid])
            self.touched.append((self.store.chunks, self.chunks, cid))
            await self.store.chunks.update_one({"_id": cid}, {"$set": {"data": Binary(data)}})
        elif kind == "delete":
            del entries[self.rng.randrange(len(entries))]
            await self.put_chunk(cid, entries)
        elif kind == "delete_chunk":
            await self.put_chunk(cid, None)
        elif kind == "swap":
            other = self.rng.choice(ids)
            if other == cid and len(entries) > 1:
                i, j = self.rng.sample(range(len(entries)), 2)
                entries[i], entries[j] = entries[j], entries[i]
                await self.put_chunk(cid, entries)
            else:
                theirs = self.entries(other)
                i, j = self.rng.randrange(len(entries)), self.rng.randrange(len(theirs))
                if other == cid:  # a one-entry chunk: swap it with its neighbour's
                    other = ids[(ids.index(cid) + 1) % len(ids)]
                    theirs = self.entries(other)
                    j = 0
                entries[i], theirs[j] = theirs[j], entries[i]
                await self.put_chunk(cid, entries)
                await self.put_chunk(other, theirs)
        elif kind == "truncate":
            last = ids[-1]
            keep = self.rng.randrange(len(self.entries(last)))
            await self.put_chunk(last, self.entries(last)[:keep])
        else:
            await self.replace_head()
        return kind

    def flipped(self, doc: dict[str, Any]) -> bytearray:
        """The stored bytes with one bit flipped where it changes what they hold: some bits of
        a zstd frame's header (its window size, say) change the bytes, not the entries."""
        original = unpack(doc["data"], doc["count"])
        while True:
            data = bytearray(doc["data"])
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
            try:
                if unpack(bytes(data), doc["count"]) == original:
                    continue
            except Exception:  # noqa: S110 - unreadable is a change too
                pass
            return data

    async def replace_head(self) -> None:
        size = self.rng.choice([s for s in self.heads if s > 0])
        doc = dict(self.heads[size])
        how = self.rng.choice(["root", "size", "signature", "key", "copy", "forged"])
        if how == "root":
            doc["root_hash"] = hashlib.sha256(self.rng.randbytes(8)).hexdigest()
        elif how == "size":
            doc["size"] = size + self.rng.choice([-1, 1])
        elif how == "signature":
            doc["signature"] = self.heads[self.rng.choice(list(self.heads))]["signature"]
            if doc["signature"] == self.heads[size]["signature"]:
                doc["timestamp"] = "2030-01-01T00:00:00.000000Z"
        elif how == "key":
            doc["key_id"] = "0" * 16
        elif how == "copy":  # a genuine head, stored under another size
            other = self.rng.choice([s for s in self.heads if s != size])
            doc = {**self.heads[other], "_id": size}
        else:  # a head recomputed over altered entries, signed by somebody else's key
            forger = TreeHeadSigner(self.rng.randbytes(32))
            head = forger.sign(size, hashlib.sha256(b"x").digest(), datetime.now(UTC))
            doc.update(root_hash=head.root_hash, signature=head.signature, key_id=head.key_id)
        self.touched.append((self.store.checkpoints, self.heads, size))
        await self.store.checkpoints.replace_one({"_id": size}, doc)


async def test_a_thousand_random_tamperings_are_all_detected(store: AuditStore) -> None:
    rng = random.Random(20261123)
    log = new_log(store, checkpoint_every_entries=17)
    await log.load()
    patients = [make_ins(rng) for _ in range(6)]
    seq = 0
    while log.size < 120:
        batch = []
        for _ in range(rng.randint(1, 14)):
            seq += 1
            batch.append(record(seq, rng.choice([*patients, ""])))
        await log.append(batch)
    await log.sign()
    clean = await scan(store, KEYS)
    assert clean.problem is None and clean.size == log.size
    assert len(clean.heads) > 5

    tamperer = Tamperer(store, rng)
    await tamperer.snapshot()
    kinds: dict[str, int] = {}
    for attempt in range(1000):
        kind = await tamperer.apply()
        kinds[kind] = kinds.get(kind, 0) + 1
        found = await scan(store, KEYS)
        assert found.problem is not None, f"tampering {attempt} ({kind}) went unnoticed"
        await tamperer.restore()
    assert (await scan(store, KEYS)).problem is None  # restored: the log verifies again
    assert set(kinds) == {
        "flip", "flip_stored", "delete", "delete_chunk", "swap", "truncate", "head"
    }  # fmt: skip


async def test_a_witnessed_head_catches_a_tail_cut_with_its_heads(store: AuditStore) -> None:
    log = new_log(store)
    await log.load()
    await log.append([record(s, make_ins()) for s in range(1, 11)])
    witness = await log.sign()  # a client kept this one
    last = (await store.chunks.find_one({}, sort=[("_id", -1)]))["_id"]
    await store.chunks.delete_one({"_id": last})
    await store.checkpoints.delete_one({"_id": witness.size})
    # the stored tree's edge still covers the cut entries: that alone gives the cut away…
    assert "covers 10 entries" in str((await scan(store, KEYS)).problem)
    await store.edge.delete_many({})  # …unless the edge goes too (with the copy of the head)
    await store.latest.delete_many({})
    assert (await scan(store, KEYS)).problem is None  # the database alone cannot tell
    found = await scan(store, KEYS, witness=witness)
    assert found.problem is not None and "tail was cut" in str(found.problem)


async def test_dmp_audit_verify_reports_ok_then_the_first_inconsistency(
    store: AuditStore, infra: Infra
) -> None:
    log = new_log(store)
    await log.load()
    await log.append([record(s, make_ins()) for s in range(1, 40)])
    await log.sign()
    key = base64.b64encode(raw_public_key(SIGNER.public_key)).decode()
    argv = [
        sys.executable, "-m", "dmp_audit.cli", "audit", "verify", "--quiet",
        "--mongo-url", infra.mongo.url, "--database", store.db.name,
        "--public-key", f"{SIGNER.key_id}:{key}",
    ]  # fmt: skip
    env = {**os.environ, "DMP_ENV": "dev"}

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, env=env, check=False)

    ok = await asyncio.to_thread(run, argv)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "39 entries" in ok.stdout and "OK" in ok.stdout
    await store.checkpoints.update_one({"_id": 39}, {"$set": {"root_hash": "00" * 32}})
    bad = await asyncio.to_thread(run, argv)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "INCONSISTENT" in bad.stdout and "size 39" in bad.stdout
    forged = f"{SIGNER.key_id}:{base64.b64encode(bytes(32)).decode()}"
    wrong_key = await asyncio.to_thread(run, [*argv[:-1], forged])
    assert wrong_key.returncode == 2 and "not the one given" in wrong_key.stderr


async def test_worker_processes_check_the_log_as_the_service_does(store: AuditStore) -> None:
    """The parallel path (large logs) finds what the in-process one finds."""
    rng = random.Random(5)
    log = new_log(store, checkpoint_every_entries=50)
    await log.load()
    patients = [make_ins(rng) for _ in range(8)]
    seq = 0
    for _ in range(70):
        batch = []
        for _ in range(rng.randint(1, 6)):
            seq += 1
            batch.append(record(seq, rng.choice([*patients, ""])))
        await log.append(batch)
    await log.sign()
    inline = await scan(store, KEYS, parallel=False)
    workers = await scan(store, KEYS, parallel=True)
    assert inline.problem is None and workers.problem is None
    assert workers.size == inline.size == log.size
    heads = await log.chain_heads(set(patients))
    assert workers.chains == inline.chains == {i: (n, h.hex()) for i, (n, h) in heads.items()}
    assert [h.size for h in workers.heads] == [h.size for h in inline.heads]
    tamperer = Tamperer(store, rng)
    await tamperer.snapshot()
    for _ in range(30):
        kind = await tamperer.apply()
        found = await scan(store, KEYS, parallel=True)
        assert found.problem is not None, kind
        assert str(found.problem) == str((await scan(store, KEYS, parallel=False)).problem)
        await tamperer.restore()


class FailingAfter(AuditStore):
    """The same store, whose scan of the chunks breaks off with the database's error after
    `count` chunks (as a connection lost mid-scan does)."""

    def __init__(self, store: AuditStore, count: int) -> None:
        super().__init__(store.db)
        self.count = count

    async def scan_chunks(self) -> AsyncIterator[dict[str, Any]]:
        served = 0
        async for doc in super().scan_chunks():
            if served == self.count:
                raise AutoReconnect("connection closed")
            served += 1
            yield doc


@pytest.mark.parametrize("parallel", [False, True])
async def test_a_scan_whose_database_fails_midway_fails_and_does_not_hang(
    store: AuditStore, parallel: bool
) -> None:
    """The chunks are read ahead of the checking by a task of their own: its failure reaches
    the caller (as the database's error, never a verdict on a log half read)."""
    log = new_log(store)
    await log.load()
    rng = random.Random(9)
    for first in range(1, 41, 4):
        await log.append([record(seq, make_ins(rng)) for seq in range(first, first + 4)])
    await log.sign()
    assert (await scan(store, KEYS, parallel=parallel)).size == 40
    with pytest.raises(AutoReconnect):
        await asyncio.wait_for(scan(FailingAfter(store, 3), KEYS, parallel=parallel), 30)


async def test_the_appender_keeps_its_tiles_as_files_and_a_new_replica_fills_its_own(
    store: AuditStore, tmp_path: Path
) -> None:
    leader = new_log(store, tile_dir=str(tmp_path / "leader"))
    await leader.load()
    ins = make_ins()
    for at in range(1, 1400, 200):
        await leader.append([record(s, ins) for s in range(at, at + 200)])
    await leader.sign()
    stored = {doc["_id"]: bytes(doc["hashes"]) async for doc in store.tiles.find({})}
    assert len(stored) == 5  # 1,400 entries: five full tiles, all at level 0
    kept = TileFiles(tmp_path / "leader")
    assert [kept.read((0, i)) for i in range(5)] == [stored[i] for i in range(5)]

    follower = new_log(store, tile_dir=str(tmp_path / "follower"))
    stop = asyncio.Event()
    filling = asyncio.create_task(follower.fill_tile_files(stop))
    await asyncio.sleep(1.2)
    assert TileFiles(tmp_path / "follower").read((0, 0)) is None  # nothing before it follows
    await follower.follow()
    own = TileFiles(tmp_path / "follower")
    for _ in range(100):
        if own.read((0, 0)) is not None:
            break
        await asyncio.sleep(0.05)
    assert [own.read((0, i)) for i in range(5)] == [stored[i] for i in range(5)]
    assert not filling.done()  # done with the files, it waits for the service to stop
    stop.set()
    await asyncio.wait_for(filling, 2)
    leaves = merkle.Tree()
    leaves.extend([await follower.tree.leaf(i) for i in range(1400)])
    assert leaves.root() == leader.tree.root()


async def test_a_replica_that_does_not_append_follows_the_sequencer_and_proves_the_same(
    store: AuditStore,
) -> None:
    leader, follower = new_log(store), new_log(store)
    await follower.follow()
    assert not follower.loaded  # nothing signed yet: it answers nothing rather than guess
    await leader.load()
    ins = make_ins()
    await leader.append([record(s, ins) for s in range(1, 701)])
    await leader.sign()
    await follower.follow()
    assert follower.loaded and follower.size == 700 and follower.head == leader.head
    assert follower.tree.root() == leader.tree.root()
    for seq, size in ((5, 700), (300, 512), (699, 700)):
        assert await follower.tree.inclusion_proof(seq, size) == await leader.tree.inclusion_proof(
            seq, size
        )
    assert await follower.trail_length(ins) == 700
    await leader.append([record(701, ins)])
    await leader.sign()
    await follower.follow()
    assert follower.size == 701 and await follower.trail_length(ins) == 701
    # a replica whose lease is not held does not append, and leaves nothing behind
    follower.may_append = lambda: False
    with pytest.raises(NotSequencer):
        await follower.append([record(702, ins)])
    assert await store.chunks.count_documents({}) == 2
    assert await store.events.count_documents({}) == 701
    # two replicas believing they append: the second's chunk collides, nothing forks
    await follower.load()
    follower.may_append = lambda: True
    await leader.append([record(702, ins)])
    with pytest.raises(ChunkTaken):
        await follower.append([record(703, make_ins())])
    await follower.load()
    assert follower.size == 702 and follower.tree.root() == leader.tree.root()
    assert (await scan(store, KEYS)).problem is None


async def test_a_replica_that_has_not_followed_yet_serves_reads_at_once(store: AuditStore) -> None:
    """Behind round-robin channels a read may reach a replica before its first follow: it
    serves the trail from the database and reads the stored edge and head on demand, rather
    than answer "loading" while the sequencer has signed."""
    leader, follower = new_log(store), new_log(store)
    follower.may_append = lambda: False
    api = AuditServicer(follower, store, identity=None, deadline=1.0)  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="loading"):  # nothing signed anywhere yet
        await api.GetCheckpoint(audit_pb2.GetCheckpointRequest(), None)  # type: ignore[arg-type]
    await leader.load()
    ins = make_ins()
    patient = Principal(kind="patient", subject=ins, ins=ins, roles=frozenset({"patient"}))
    reads = [  # the patient's own: their names need no directory
        Record(s, audit_event(source="dossier", clock=CLOCK, caller=patient, patient_ins=ins,
                              action="read", outcome="success"))
        for s in range(1, 6)
    ]  # fmt: skip
    await leader.append(reads)
    await leader.sign()
    assert not follower.loaded
    token = current_principal.set(patient)
    try:
        trail = await api.ListAccessLog(
            audit_pb2.ListAccessLogRequest(ins=ins, page_size=10),
            None,  # type: ignore[arg-type]
        )
    finally:
        current_principal.reset(token)
    assert [e.seq for e in trail.entries] == [4, 3, 2, 1, 0]
    got = await api.GetCheckpoint(audit_pb2.GetCheckpointRequest(), None)  # type: ignore[arg-type]
    assert follower.loaded and got.checkpoint.size == 5
    assert got.checkpoint.root_hash == leader.head.root_hash  # type: ignore[union-attr]
    # the sequencer reloading refuses until its heads are read again, not a partial trail
    leader.loaded = False
    token = current_principal.set(patient)
    try:
        with pytest.raises(Unavailable, match="loading"):
            await AuditServicer(leader, store, identity=None, deadline=1.0).ListAccessLog(  # type: ignore[arg-type]
                audit_pb2.ListAccessLogRequest(ins=ins),
                None,  # type: ignore[arg-type]
            )
    finally:
        current_principal.reset(token)


async def _stored(store: AuditStore) -> dict[str, Any]:
    """What a log's derivations store: its trail, its tiles and its edge."""
    return {
        "trail": [d async for d in store.trail.find({}, sort=[("_id", 1)])],
        "tiles": [d async for d in store.tiles.find({}, sort=[("_id", 1)])],
        "edge": await store.load_edge(),
    }


class HeldTrail(AuditStore):
    """The same store, whose trail writes for the chunk starting at `first` wait until the
    test opens `gates[first]`."""

    def __init__(self, store: AuditStore) -> None:
        super().__init__(store.db)
        self.gates: collections.defaultdict[int, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )
        self.on_lookup: Callable[[], Awaitable[None]] | None = None  # before the next lookup

    async def write_trail(self, docs: Any) -> None:
        if docs:
            await self.gates[docs[0]["chunk"]].wait()
        await super().write_trail(docs)

    async def chain_head(self, ins: str) -> tuple[int, bytes] | None:
        hook, self.on_lookup = self.on_lookup, None
        if hook is not None:
            await hook()
        return await super().chain_head(ins)


@pytest.mark.parametrize("released", ["once the next chunk is stored", "during its lookups"])
async def test_appending_behind_stores_what_appending_whole_does(
    store: AuditStore, released: str
) -> None:
    """The consumer's appends return once the chunk is stored and derive the tiles, the trail
    and the edge while the next batch is prepared. Each batch here is chained while the trail
    of the one before is held back — released once the next chunk is stored, or while the
    next batch looks up the chain heads of dossiers it has not met (the derivation ends in the
    middle of the chaining). Dossiers met in consecutive batches are chained through entries
    not yet stored, and the log and what is stored are those of appending whole."""
    other = AuditStore(store.db.client[f"{store.db.name}_{released[:4]}"])
    held = HeldTrail(store)
    try:
        behind = new_log(held, checkpoint_interval_seconds=3600)
        whole = new_log(other, checkpoint_interval_seconds=3600)
        await behind.load()
        await whole.load()
        rng = random.Random(11)
        patients = [make_ins(rng) for _ in range(6)]
        seq, firsts = 0, []
        for size in (300, 1, 257, 40, 512, 3):  # tiles completed across and within batches
            batch = []
            for _ in range(size):
                seq += 1
                batch.append(record(seq, rng.choice([*patients, ""])))
            seq += 1
            batch.append(record(seq, make_ins(rng)))  # a dossier met for the first time
            assert await whole.append(batch) == size + 1
            first = behind.size
            if firsts and released == "during its lookups":
                gate = held.gates[firsts[-1]]

                async def release(gate: asyncio.Event = gate) -> None:
                    gate.set()
                    await behind.settle()  # the derivation before has ended, and forgotten

                held.on_lookup = release
            appending = asyncio.create_task(behind.append(batch, behind=True))
            if firsts and released == "during its lookups":
                assert await appending == size + 1
                assert held.on_lookup is None  # it did look one up
            elif firsts:  # its chunk stored while the trail before it is held back
                async with asyncio.timeout(30):
                    while await store.chunks.find_one({"_id": first}) is None:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                assert await store.trail.count_documents({"chunk": firsts[-1]}) == 0
                held.gates[firsts[-1]].set()
            assert await appending == size + 1
            firsts.append(first)
        held.gates[firsts[-1]].set()
        await behind.settle()
        assert not behind._unstored
        assert behind.tree.root() == whole.tree.root()
        assert await behind.chain_heads(set(patients)) == await whole.chain_heads(set(patients))
        assert await _stored(store) == await _stored(other)
        await behind.sign()
        state = await scan(store, KEYS)
        assert state.problem is None and state.size == seq
    finally:
        await other.db.client.drop_database(other.db.name)


class TrailFailingOnce(AuditStore):
    """The same store, whose `after`-th trail write fails with the database's error."""

    def __init__(self, store: AuditStore, after: int) -> None:
        super().__init__(store.db)
        self.writes, self.after = 0, after

    async def write_trail(self, docs: Any) -> None:
        self.writes += 1
        if self.writes == self.after:
            raise AutoReconnect("connection closed")
        await super().write_trail(docs)


async def test_a_derivation_failing_behind_the_chunks_is_redone_and_nothing_is_lost(
    store: AuditStore,
) -> None:
    """A trail write failing after its chunk is stored: the next append says so (its records
    are then redelivered from the log's stream position), the one after reloads the log from
    its edge and derives the stored chunks again; every record is in the log once."""
    failing = TrailFailingOnce(store, after=2)  # the second batch's derivation (one write each)
    log = new_log(failing)
    await log.load()
    rng = random.Random(12)
    patients = [make_ins(rng) for _ in range(5)]
    batches = [[record(s, rng.choice(patients)) for s in range(f, f + 50)] for f in (1, 51, 101)]
    assert await log.append(batches[0], behind=True) == 50
    assert await log.append(batches[1], behind=True) == 50
    with pytest.raises(AutoReconnect):  # the second batch's derivation failed meanwhile
        await log.append(batches[2], behind=True)
    assert log.stream_last == 100  # its chunk is stored: not redelivered past it
    assert await log.append(batches[2], behind=True) == 0  # reloaded: the chunk was stored
    assert log.size == 150 and log.stream_last == 150
    await log.settle()
    await log.sign()
    state = await scan(store, KEYS)
    assert state.problem is None and state.size == 150
    assert await store.trail.count_documents({}) == 150
    for ins in patients:
        entries = [d async for d in store.trail.find({"ins": ins}, sort=[("n", 1)])]
        assert [d["n"] for d in entries] == list(range(len(entries)))


async def test_a_derivation_failing_while_the_stream_is_idle_is_redone_before_a_head_is_signed(
    store: AuditStore,
) -> None:
    """The last batch's trail write fails behind its acknowledged chunk and no record follows
    to reload the log: the appender's idle tick redoes the derivation from the edge before it
    signs, so no head covers tiles, trail or an edge that were never stored."""
    failing = TrailFailingOnce(store, after=1)
    log = new_log(failing, checkpoint_interval_seconds=3600)
    await log.load()
    ins = make_ins()
    assert await log.append([record(s, ins) for s in range(1, 51)], behind=True) == 50
    async with asyncio.timeout(30):
        while not log._stale:  # noqa: ASYNC110 - the derivation fails in the background
            await asyncio.sleep(0.01)
    log.settings.checkpoint_interval_seconds = 0  # a head is due
    await log.tick()
    head, edge = await store.latest_head(), await store.load_edge()
    assert head is not None and head.size == 50
    assert edge is not None and edge["size"] == 50
    assert await store.trail.count_documents({"ins": ins}) == 50
    follower = new_log(store)
    await follower.follow()
    assert follower.size == 50 and follower.head == head
    state = await scan(store, KEYS)
    assert state.problem is None and state.size == 50


class FirstLookupHeld(AuditStore):
    """The same store, whose first chain-head lookup once the test clears `held` reads the
    database at once and returns only when the test opens `gate` (a reader's slow lookup)."""

    def __init__(self, store: AuditStore) -> None:
        super().__init__(store.db)
        self.gate, self.held = asyncio.Event(), asyncio.Event()
        self.held.set()  # nothing held until the test asks

    async def chain_head(self, ins: str) -> tuple[int, bytes] | None:
        found = await super().chain_head(ins)
        if not self.held.is_set():
            self.held.set()
            await self.gate.wait()
        return found


async def test_a_readers_slow_lookup_does_not_bring_back_an_older_chain_head(
    store: AuditStore,
) -> None:
    """A reader looks a dossier's chain head up while the appender chains, stores and caches
    the dossier's next entry: the reader's older answer, returning last, must not replace the
    cached head, or the entry after would be chained to the one before."""
    held = FirstLookupHeld(store)
    log = new_log(held)
    await log.load()
    ins = make_ins()
    await log.append([record(s, ins) for s in range(1, 4)])
    log._chains.clear()  # the dossier not seen lately
    held.held.clear()
    reading = asyncio.create_task(log.trail_length(ins))
    async with asyncio.timeout(30):
        await held.held.wait()  # the reader has its answer (3 entries) and is slow to return
    await log.append([record(4, ins)])
    held.gate.set()
    assert await reading in (3, 4)
    await log.append([record(5, ins)])
    await log.sign()
    state = await scan(store, KEYS)
    assert state.problem is None and state.size == 5


async def test_a_tile_stored_again_must_hold_the_same_hashes(store: AuditStore) -> None:
    """Writing tiles is idempotent (a derivation redone after a crash), but a tile stored with
    other hashes is another tree's: the writer stops."""
    tile, other = bytes(range(256)) * 32, bytes(reversed(range(256))) * 32
    await store.write_tiles([((0, 0), tile), ((0, 1), tile)])
    await store.write_tiles([((0, 0), tile), ((0, 2), tile)])  # the same again, and a new one
    assert set((await store.load_tiles([(0, 0), (0, 1), (0, 2)])).values()) == {tile}
    with pytest.raises(ChunkTaken, match="another tree's tile"):
        await store.write_tiles([((0, 3), tile), ((0, 1), other)])
    assert (await store.load_tiles([(0, 1), (0, 3)])) == {(0, 1): tile, (0, 3): tile}


async def test_a_trail_read_waits_for_what_was_recorded_before_it_on_either_replica(
    store: AuditStore,
) -> None:
    """`reach(stream_seq)`: on the appender, once the chunk holding that record is stored with
    its trail (its linger cut short meanwhile); on another replica, once the stored edge says
    so. A replica that does not append reads each dossier's trail length from the database,
    never from what it read before."""
    held = HeldTrail(store)
    leader, follower = new_log(held), new_log(store)
    follower.may_append = lambda: False
    await leader.load()
    ins = make_ins()
    held.gates[0].set()  # the first chunk's trail (entries 0-2) is written; the next waits
    await leader.append([record(s, ins) for s in range(1, 4)])
    assert await follower.trail_length(ins) == 3
    assert await leader.append([record(s, ins) for s in range(4, 6)], behind=True) == 2
    assert not leader.hurry.is_set()
    # the chunk is stored, its trail not yet: neither replica holds record 5 in the trail
    assert not await leader.reach(5, 0.1)
    assert leader.hurry.is_set()  # the appender's linger is told to end
    assert not await follower.reach(5, 0.1)
    assert await follower.trail_length(ins) == 3
    held.gates[3].set()
    assert await leader.reach(5, 5.0)
    assert await follower.reach(5, 5.0)
    assert await follower.trail_length(ins) == 5
    assert not await follower.reach(6, 0.05)  # not in the stream's records appended yet


async def test_a_small_batch_is_one_insert_of_its_event_ids_and_one_of_its_trail(
    store: AuditStore, infra: Infra
) -> None:
    """A batch is split for concurrent inserts only when large: under a trickle of reads each
    part would be a round trip of its own."""
    commands = CommandsSent()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongo.url, event_listeners=[commands]
    )

    def inserted(collection: str) -> list[int]:
        return [len(command["documents"]) for command in commands.of("insert", collection)]

    try:
        log = new_log(AuditStore(client[store.db.name]))
        await log.load()
        rng = random.Random(3)
        patients = [make_ins(rng) for _ in range(4)]
        assert await log.append([record(s, rng.choice(patients)) for s in range(1, 13)]) == 12
        assert inserted("events") == [12]
        assert inserted("trail") == [12]
        commands.sent.clear()
        assert await log.append([record(s, rng.choice(patients)) for s in range(13, 1013)]) == 1000
        assert sorted(inserted("trail")) == [250, 250, 250, 250]
    finally:
        await client.close()


async def test_a_trail_read_is_not_let_through_while_the_next_append_waits_on_the_derivation(
    store: AuditStore,
) -> None:
    """The next append settles the derivation before it (taking it from the log meanwhile):
    what the reader waits for is the stream position whose trail is stored, not the absence
    of a derivation under way."""
    held = HeldTrail(store)
    log = new_log(held)
    await log.load()
    ins = make_ins()
    await log.append([record(s, ins) for s in range(1, 3)], behind=True)  # trail held back
    following = asyncio.create_task(log.append([record(3, ins)], behind=True))
    await asyncio.sleep(0.2)  # its chunk is stored; it waits on the one before's derivation
    assert not following.done()
    assert not await log.reach(2, 0.2)
    held.gates[0].set()
    held.gates[2].set()
    assert await following == 1
    assert await log.reach(3, 5.0)
    assert await log.trail_length(ins) == 3


class FailingWhileClaiming(AuditStore):
    """A store whose trail write for the chunk at 0 fails once the test says so, and whose
    claims of the next batch wait for the test meanwhile."""

    def __init__(self, store: AuditStore) -> None:
        super().__init__(store.db)
        self.fail = asyncio.Event()
        self.claiming = asyncio.Event()
        self.go_on = asyncio.Event()
        self.claims = 0

    async def write_trail(self, docs: Any) -> None:
        if docs and docs[0]["chunk"] == 0:
            await self.fail.wait()
            raise AutoReconnect("connection closed")
        await super().write_trail(docs)

    async def claim_events(self, records: Any) -> dict[str, int]:
        self.claims += 1
        if self.claims == 2:
            self.claiming.set()
            await self.go_on.wait()
        return await super().claim_events(records)


async def test_a_failed_derivation_is_not_taken_for_a_stored_trail_by_the_next_append(
    store: AuditStore,
) -> None:
    """The derivation of a chunk fails while the next append, of duplicates only, claims its
    records: that append must not say the stream is stored up to its records (a trail read
    would then miss the failed chunk's entries)."""
    failing = FailingWhileClaiming(store)
    log = new_log(failing)
    await log.load()
    ins = make_ins()
    first = [record(s, ins) for s in range(1, 3)]
    assert await log.append(first, behind=True) == 2
    again = [Record(10 + r.stream_seq, r.event) for r in first]  # republished: duplicates
    following = asyncio.create_task(log.append(again, behind=True))
    await failing.claiming.wait()
    failing.fail.set()
    behind = log._behind  # the first chunk's derivation, failing now
    assert behind is not None
    with contextlib.suppress(AutoReconnect):
        await behind
    failing.go_on.set()
    assert await following == 0
    assert log.stored_last < 12
    assert not await log.reach(2, 0.1)
