"""The audit log at scale: a log of millions of entries stored as tiles.

`audit_scale` fills a log through the append path itself (chunks, event-id index, tiles,
trails, edge), then starts the audit service process on it and measures what an operator
lives with: the time from the process's start to answering a checkpoint of the whole log (no
replay), its resident memory once it has served thousands of proofs and tiles, the inclusion
proof latency over gRPC (p99), and the storage per entry, collection by collection, against
Tessera's ~32 bytes of hashes per entry. Floor: `ListPublicKeys` on the same server.

The appender keeps its full tiles as files too (`DMP_TILE_DIR`), as the sequencer does, and
the process is started on them. Then a second process is started with no tile files, as a
replica that has just come up on another node: its proofs read their tiles from the database
while it fills its files from there in the background; the time that takes is read from its
log, and its proofs are timed again once it is done.

    uv run --frozen python -m bench.run audit_scale --iterations 10000000
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import bson

from bench.audit import (
    CLOCK,
    Servers,
    _records,
    _settings,
    audit_channel,
    servers,
    spawn_audit,
    timed_proofs,
    until_serving,
)
from bench.run import record, summary
from dmp.audit.v1 import audit_pb2 as pb
from dmp.audit.v1 import audit_pb2_grpc
from dmp_audit.__main__ import signer
from dmp_audit.log import AuditLog, Record
from dmp_audit.store import AuditStore
from dmp_audit.tiles import TILE_WIDTH, Tile, edge_widths
from dmp_stack.stack import stop_pid
from dmp_stack.testing import make_ins

# The dossiers the entries are about. Each append reads the chain head (the newest entry) of
# each dossier it touches; beyond DMP_CHAIN_CACHE dossiers in random order, nearly every one is
# a database read, and FerretDB 1.24 answers a batch of them one query each (it does not push
# `$in` down): with 200,000 dossiers the fill ran at ~300 entries/s. 20,000 dossiers keep the
# heads cached; what is measured here (start, memory, proofs) does not depend on the count.
DOSSIERS = 20_000
BATCH = 2000


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _fill(audit: AuditLog, n: int) -> float:
    rng = random.Random(2)
    dossiers = [make_ins(rng) for _ in range(DOSSIERS)]
    started = time.perf_counter()
    seq = 0
    while seq < n:
        events = _records(min(BATCH, n - seq), dossiers, rng)
        await audit.append([Record(seq + i + 1, e) for i, e in enumerate(events)])
        seq += len(events)
        if seq % 500_000 == 0:
            rate = seq / (time.perf_counter() - started)
            print(f"  filled {seq:,} ({rate:,.0f}/s)", file=sys.stderr)
    await audit.sign()
    return time.perf_counter() - started


async def _storage(store: AuditStore, n: int) -> dict[str, float]:
    """Bytes per entry of what each collection holds: its documents as BSON (the mean of up to
    200 of them times their count; reading 20 million documents would take longer than
    the rest of the run)."""
    out: dict[str, float] = {}
    for name in ("chunks", "tiles", "trail", "events", "edge", "checkpoints"):
        count = await store.db[name].estimated_document_count()
        sample = store.db[name].find({}, limit=200, batch_size=10)
        sizes = [len(bson.encode(doc)) async for doc in sample]
        out[name] = round(count * (sum(sizes) / len(sizes)) / n, 2) if sizes else 0.0
    return out


def _disk_bytes(data: Path) -> int:
    """What the database's files take on disk (FerretDB and its PostgreSQL: tables, indexes,
    write-ahead log), for the bytes per entry as stored, beside the BSON above."""
    return sum(f.stat().st_size for f in data.rglob("*") if f.is_file())


def _logged(log: Path, event: str, wait: float) -> dict[str, Any] | None:
    """The service's first log line of `event`, waited for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if event in line:
                found: dict[str, Any] = json.loads(line)
                return found
        time.sleep(0.05)
    return None


def _load_seconds(log: Path) -> float:
    """The log's own part of the start, from the service's log line. A replica answers the
    stored checkpoint before its load is logged: the line is waited for a few seconds."""
    line = _logged(log, "audit_log_loaded", 5)
    return float(line["seconds"]) if line else -1.0


async def _new_replica(
    up: Servers, audit_key: str, n: int, rng: random.Random
) -> dict[str, dict[str, float]]:
    """A replica new on its node: no tile files yet. Its proofs read their tiles from the
    database while it fills its files from there; then they are timed again."""
    tile_dir = up.root / f"tiles-{secrets.token_hex(4)}"
    up.service, port = spawn_audit(
        up.root, up.mongo.url, up.nats.url, audit_key, "INFO", tile_dir, f"{tile_dir.name}.log"
    )
    channel = audit_channel(port)
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    try:
        await until_serving(stub, n, time.perf_counter())
        cold, cold_floor = await timed_proofs(stub, n, 2000, rng)
        filled = _logged(up.root / f"{tile_dir.name}.log", "tile_files_filled", 1800)
        if filled is None:
            raise RuntimeError("the new replica did not fill its tile files within 30 min")
        warm, warm_floor = await timed_proofs(stub, n, 2000, rng)
    finally:
        await channel.close()
        stop_pid(up.service.pid)
        up.service = None
    return {
        "new_replica_proof": summary(cold),
        "new_replica_floor": summary(cold_floor),
        "new_replica_fill": {"seconds": filled["seconds"], "tiles": filled["tiles"]},
        "new_replica_filled_proof": summary(warm),
        "new_replica_filled_floor": summary(warm_floor),
    }


async def _scale(n: int) -> dict[str, Any]:
    audit_key = base64.b64encode(secrets.token_bytes(32)).decode()
    keep = os.environ.get("DMP_BENCH_KEEP_LOG") == "1"
    async with servers("dmp-bench-audit-scale-", keep=keep) as up:
        if keep:  # for `python -m bench.audit_scale <root>` later: the log's key beside it
            key_file = up.root / "audit.key"
            key_file.write_text(audit_key)
            key_file.chmod(0o600)
            print(f"  the log is kept in {up.root}", file=sys.stderr)
        tile_dir = up.root / "tiles"
        settings = _settings(audit_key, append_batch=BATCH, tile_dir=str(tile_dir))
        store = AuditStore(up.client["audit"])
        await store.ensure_indexes()
        audit = AuditLog(store, signer(settings), CLOCK, settings)
        await audit.load()
        fill_s = await _fill(audit, n)
        storage = await _storage(store, n)
        disk = _disk_bytes(up.root / "data") / n

        started = time.perf_counter()
        up.service, port = spawn_audit(
            up.root, up.mongo.url, up.nats.url, audit_key, level="INFO", tile_dir=tile_dir
        )
        channel = audit_channel(port)
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        to_serving = await until_serving(stub, n, started)
        load_s = _load_seconds(up.root / "audit.log")
        rss_loaded = _rss_mb(up.service.pid)
        rng = random.Random(3)
        target, floor = await timed_proofs(stub, n, 2000, rng)
        widths = edge_widths(n)
        for _ in range(500):  # random full tiles of every level, as a verifier fetches them
            level = rng.randrange(len(widths))
            full = n >> (8 * (level + 1))
            if full:
                path = Tile(level, rng.randrange(full)).path()
                tile = await stub.GetTile(pb.GetTileRequest(path=path), timeout=5)
                assert len(tile.hashes) == 32 * TILE_WIDTH
        rss_served = _rss_mb(up.service.pid)
        await channel.close()
        stop_pid(up.service.pid)

        replica = await _new_replica(up, audit_key, n, rng)
        files = sum(f.stat().st_blocks * 512 for f in tile_dir.iterdir()) / n
        hashes = storage["tiles"] + storage["edge"]
        return record(
            "audit_scale",
            f"A log of {n:,} entries over {DOSSIERS:,} dossiers "
            "stored as tiles on the default database: the audit process started on it, time to "
            "answering the whole log's checkpoint, its RSS after 2,000 inclusion proofs and 500 "
            "tiles, and the proof's latency over gRPC, its tiles read from the files the appender "
            "kept; then the same from a second process with no tile files yet. Floor: "
            "ListPublicKeys, interleaved.",
            summary(target),
            summary(floor),
            {
                "entries": n,
                "restart_to_serving_s": round(to_serving, 2),
                "load_s": load_s,
                "rss_mb_loaded": round(rss_loaded, 1),
                "rss_mb_served": round(rss_served, 1),
                "fill_entries_per_s": round(n / fill_s),
                "bytes_per_entry": storage,
                "hash_bytes_per_entry": round(hashes, 2),
                "disk_bytes_per_entry": round(disk, 1),
                "tile_file_bytes_per_entry": round(files, 2),
                **replica,
                "targets": {"rss_mb": 150, "restart_s": 2, "proof_p99_ms": 5},
            },
        )


def audit_scale(n: int) -> dict[str, Any]:
    return asyncio.run(_scale(n))


async def _again(root: Path) -> dict[str, Any]:
    """The new replica's part again, on a log kept by DMP_BENCH_KEEP_LOG=1 (a 10M fill takes
    40 minutes); printed, not recorded."""
    async with servers("", root=root, keep=True) as up:
        edge = await up.client["audit"]["edge"].find_one({})
        if edge is None:
            raise SystemExit(f"no audit log in {root}")
        n = int(edge["size"])
        replica = await _new_replica(up, (root / "audit.key").read_text(), n, random.Random(4))
        return {"entries": n, **replica}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_again(Path(sys.argv[1]))), indent=2))
