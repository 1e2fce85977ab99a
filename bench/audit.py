"""Audit benchmarks: appending from the stream, verifying a million entries, serving proofs.

- `audit_append`: 50,000 audit records wait in the AUDIT stream; the service's consumer code
  (bind, fetch, append, ack) appends them to a log on FerretDB. Floor: the same consumer
  fetching and acknowledging the same records without storing anything.
- `audit_verify`: a log of 1,000,000 entries (over 20,000 dossiers) is re-read and checked
  completely, as `dmp audit verify` does. Floor: reading the same chunks and nothing else.
- `audit_proof`: the audit service process, started on that log, answers inclusion proofs for
  random entries over gRPC. Floor: the same server's `ListPublicKeys` (no work).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from pymongo import AsyncMongoClient

from bench.cost import cpu_of, settle
from bench.run import record, summary
from dmp.audit.v1 import audit_pb2 as pb
from dmp.audit.v1 import audit_pb2_grpc
from dmp_audit.__main__ import signer
from dmp_audit.config import AuditSettings
from dmp_audit.consumer import DURABLE, STREAM, bind, run_log_consumer
from dmp_audit.log import AuditLog, Record
from dmp_audit.store import AuditStore
from dmp_audit.verify import scan
from dmp_kit.auth import Principal
from dmp_kit.bus import EventBus
from dmp_kit.clock import ManualClock
from dmp_kit.events import audit_event
from dmp_stack.infra import Started, free_port, spawn, start_mongo, start_nats
from dmp_stack.stack import stop_pid, stop_started
from dmp_stack.testing import make_ins, make_rpps

CLOCK = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))


def _records(n: int, dossiers: list[str], rng: random.Random) -> list[Any]:
    pros = [
        Principal(kind="professional", subject="s", rpps=make_rpps(rng), profession="10")
        for _ in range(50)
    ]
    return [
        audit_event(
            source="dossier",
            clock=CLOCK,
            caller=rng.choice(pros),
            patient_ins=rng.choice(dossiers),
            action=rng.choice(["read", "search", "create"]),
            outcome="success",
            document_id=f"0193f2c1-7a4b-7cde-8f00-{i:012d}",
        )
        for i in range(n)
    ]


def _settings(audit_key: str, **extra: Any) -> AuditSettings:
    return AuditSettings(env="dev", audit_key=audit_key, **extra)


# --- append from the stream -----------------------------------------------------------


async def _append(n: int, dossiers: int = 2000) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="dmp-bench-audit-"))
    mongo, nats = start_mongo(root), start_nats(root)
    rng = random.Random(1)
    settings = _settings(base64.b64encode(secrets.token_bytes(32)).decode())
    bus = EventBus(nats.url, "bench-audit")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url)
    try:
        await bus.connect()
        await bus.ensure_streams()
        events = _records(n, [make_ins(rng) for _ in range(dossiers)], rng)
        for i in range(0, n, 1000):  # publish without waiting for each ack: faster setup
            await asyncio.gather(*(bus.publish_event(e) for e in events[i : i + 1000]))

        # floor: the consumer fetching and acking the same records, storing nothing
        sub = await bind(bus, 1, settings.append_batch, settings.ack_wait_seconds)
        floor: list[float] = []
        fetched = 0
        t_floor = time.perf_counter()
        while fetched < n:
            t0 = time.perf_counter()
            msgs = await sub.fetch(settings.append_batch, timeout=5)
            [Record(m.metadata.sequence.stream, None) for m in msgs]
            await msgs[-1].ack()
            floor.append(time.perf_counter() - t0)
            fetched += len(msgs)
        floor_rate = n / (time.perf_counter() - t_floor)
        await sub.unsubscribe()
        await bus.js.delete_consumer(STREAM, DURABLE)

        store = AuditStore(client["bench_append"])
        await store.ensure_indexes()
        audit = AuditLog(store, signer(settings), CLOCK, settings)
        await audit.load()
        cycles: list[float] = []  # from one append's return to the next's: a batch's cost
        original = audit.append
        last = [0.0]

        async def timed(records: Any, **options: Any) -> int:
            done = await original(records, **options)
            now = time.perf_counter()
            if done:
                cycles.append(now - last[0])
            last[0] = now
            return done

        audit.append = timed  # type: ignore[method-assign]
        stop = asyncio.Event()
        roots = {
            "all": os.getpid(),  # this process and the servers it started
            "ferretdb": mongo.pid or 0,
            "postgresql": mongo.also[0] if mongo.also else 0,
            "nats": nats.pid or 0,
        }
        cpu_before = cpu_of(roots)
        started = last[0] = time.perf_counter()
        task = asyncio.create_task(run_log_consumer(bus, audit, stop))
        while audit.size < n:  # noqa: ASYNC110 - polling the log's size is the measurement
            await asyncio.sleep(0.01)
        await audit.settle()  # the last batch's tiles, trail and edge stored too
        elapsed = time.perf_counter() - started
        cpu = {k: v - cpu_before[k] for k, v in cpu_of(roots).items()}
        servers = cpu["ferretdb"] + cpu["postgresql"] + cpu["nats"]
        cpu_per_1000 = {k: round(v / n * 1e6, 1) for k, v in cpu.items() if k != "all"}
        cpu_per_1000["appender"] = round((cpu["all"] - servers) / n * 1e6, 1)
        stop.set()
        await task
        state = await scan(store, {audit.signer.key_id: audit.signer.public_key})
        assert state.problem is None and state.size == n, (state.problem, state.size, audit.size)
        rate = n / elapsed
        spread = dossiers > n
        return record(
            "audit_append_spread" if spread else "audit_append",
            f"{n} audit records appended from the AUDIT stream to the log on FerretDB by the "
            "service's consumer (1,000 per chunk; event-id index; tree heads signed), "
            + (
                f"each about one of {dossiers:,} dossiers: nearly every record the first of "
                "its dossier the appender meets, its chain's head looked up in the database. "
                if spread
                else f"over {dossiers:,} dossiers (after the first batches, every dossier's "
                "chain head in the appender's cache). "
            )
            + "Floor: fetching and acking the same records, storing nothing. Sample = one batch "
            "(from one append's return to the next's; the last batch's tiles, trail and edge "
            "stored before the clock stops).",
            summary(cycles),
            summary(floor),
            {
                "entries": n,
                "dossiers": dossiers,
                "cpu_ms_per_1000_entries": cpu_per_1000,
                "entries_per_s": round(rate),
                "floor_entries_per_s": round(floor_rate),
                "target_entries_per_s": 10_000,
            },
        )
    finally:
        await bus.close()
        await client.close()
        for dep in (mongo, nats):
            stop_started(dep)


def audit_append(n: int) -> dict[str, Any]:
    return asyncio.run(_append(n))


def audit_append_spread(n: int) -> dict[str, Any]:
    """The same append, each record about a dossier the appender has not met (a national log:
    tens of millions of dossiers, a cache of 50,000 chain heads)."""
    return asyncio.run(_append(n, dossiers=n * 20))


# --- verify a million, then serve proofs from it ---------------------------------------


class InMemoryChunks(AuditStore):
    """The same chunks and heads, already read: verification with no database, its CPU part."""

    def __init__(self, store: AuditStore) -> None:
        super().__init__(store.db)
        self.source = store
        self.docs: list[dict[str, Any]] = []
        self.stored_heads: list[Any] = []

    async def load(self) -> None:
        self.docs = [doc async for doc in self.source.scan_chunks()]
        self.stored_heads = await self.source.heads()

    async def chunk_count(self) -> int:
        return len(self.docs)

    async def heads(self) -> list[Any]:
        return self.stored_heads

    async def scan_chunks(self) -> Any:
        for doc in self.docs:
            yield doc


async def _fill(store: AuditStore, audit: AuditLog, n: int) -> None:
    """The log is filled through the append path itself (event-id index included)."""
    rng = random.Random(2)
    dossiers = [make_ins(rng) for _ in range(20_000)]
    seq = 0
    while seq < n:
        events = _records(min(1000, n - seq), dossiers, rng)
        await audit.append([Record(seq + i + 1, e) for i, e in enumerate(events)])
        seq += len(events)
        if seq % 100_000 == 0:
            print(f"  filled {seq}", file=sys.stderr)
    await audit.sign()


async def _verify_and_proofs(n: int, proofs: int) -> list[dict[str, Any]]:
    audit_key = base64.b64encode(secrets.token_bytes(32)).decode()
    settings = _settings(audit_key)
    async with servers("dmp-bench-audit-") as up:
        store = AuditStore(up.client["audit"])
        await store.ensure_indexes()
        audit = AuditLog(store, signer(settings), CLOCK, settings)
        await audit.load()
        t0 = time.perf_counter()
        await _fill(store, audit, n)
        fill_s = time.perf_counter() - t0
        keys = {audit.signer.key_id: audit.signer.public_key}

        in_memory = InMemoryChunks(store)
        await in_memory.load()
        # FerretDB and its PostgreSQL server (whose backends are its children)
        pids = [pid for pid in (up.mongo.pid, *up.mongo.also) if pid is not None]
        database = {str(pid): pid for pid in pids}
        # after the fill, PostgreSQL's autovacuum and checkpoints run for a while
        t0 = time.perf_counter()
        await asyncio.to_thread(settle, database, 0.05, 300.0)
        settled = time.perf_counter() - t0
        runs, floors, cpu, spent = [], [], [], []
        for _ in range(3):
            t0 = time.perf_counter()
            async for _doc in store.scan_chunks():
                pass
            floors.append(time.perf_counter() - t0)
            before = _cpu_split(database)
            t0 = time.perf_counter()
            state = await scan(store, keys)
            runs.append(time.perf_counter() - t0)
            spent.append({k: v - before[k] for k, v in _cpu_split(database).items()})
            assert state.problem is None and state.size == n
            t0 = time.perf_counter()
            state = await scan(in_memory, keys)
            cpu.append(time.perf_counter() - t0)
            assert state.problem is None and state.size == n
        verify = record(
            "audit_verify",
            f"Full verification of {n:,} entries over 20,000 dossiers, read from FerretDB: "
            "every leaf hash, seq and dossier chain, every signed head (signature and root). "
            "Floor: reading the same chunks only. Three runs.",
            summary(runs),
            summary(floors),
            {
                "entries": n,
                "seconds_total": round(statistics.median(runs), 2),
                "seconds_database": round(statistics.median(floors), 2),
                "seconds_cpu": round(statistics.median(cpu), 2),
                "cpu_note": "the same verification over the chunks already in memory",
                "target_seconds": 5,
                "fill_seconds": round(fill_s, 1),
                "database_settled_seconds": round(settled, 1),
                # CPU seconds of each party during the verification runs (median of the three)
                "cpu_seconds": {
                    k: round(statistics.median(run[k] for run in spent), 2) for k in spent[0]
                },
            },
        )

        up.service, port = spawn_audit(up.root, up.mongo.url, up.nats.url, audit_key)
        channel = audit_channel(port)
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        await until_serving(stub, n, time.perf_counter())
        rng = random.Random(3)
        target, floor = await timed_proofs(stub, n, proofs, rng)
        await channel.close()
        computed = []
        for _ in range(proofs):
            seq = rng.randrange(n)
            t0 = time.perf_counter()
            await audit.tree.inclusion_proof(seq, n)
            computed.append(time.perf_counter() - t0)
        proof = record(
            "audit_proof",
            f"One inclusion proof for a random entry of the {n:,}-entry log, over gRPC from the "
            "audit service process (the tree as tiles in the database, cached). Floor: "
            "ListPublicKeys on the same server, interleaved.",
            summary(target),
            summary(floor),
            {
                "entries": n,
                "target_p99_ms": 2,
                "proof_hashes": 20,
                "computing_only": summary(computed),
            },
        )
        return [verify, proof]


def _cpu_split(database: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far: the database's processes (FerretDB and its PostgreSQL), this process,
    and its reaped children (the verification's worker processes)."""
    own = os.times()
    return {
        "database": sum(cpu_of(database).values()),
        "main": own.user + own.system,
        "workers": own.children_user + own.children_system,
    }


@dataclass
class Servers:
    """A database and NATS of a run's own, a client, and the audit process once started."""

    root: Path
    mongo: Started
    nats: Started
    client: AsyncMongoClient[dict[str, Any]]
    service: Any = None


@contextlib.asynccontextmanager
async def servers(
    prefix: str, root: Path | None = None, keep: bool = False
) -> AsyncIterator[Servers]:
    """A database and NATS in a new directory (or `root`, whose database is used again),
    removed with it at the end unless `keep` (a 10M-entry log takes 13 GB)."""
    root = root or Path(tempfile.mkdtemp(prefix=prefix))
    mongo, nats = start_mongo(root), start_nats(root)
    up = Servers(root, mongo, nats, AsyncMongoClient(mongo.url))
    try:
        yield up
    finally:
        if up.service is not None:
            stop_pid(up.service.pid)
        await up.client.close()
        for dep in (mongo, nats):
            stop_started(dep)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def spawn_audit(
    root: Path,
    mongo_url: str,
    nats_url: str,
    audit_key: str,
    level: str = "WARNING",
    tile_dir: Path | None = None,
    log: str = "audit.log",
) -> tuple[Any, int]:
    """The audit service process on that log; returns it and its gRPC port."""
    port = free_port()
    env = {
        **os.environ,
        "DMP_TILE_DIR": str(tile_dir or ""),
        "DMP_ENV": "dev",
        "DMP_AUDIT_KEY": audit_key,
        "DMP_MONGO_URL": mongo_url,
        "DMP_NATS_URL": nats_url,
        "DMP_GRPC_LISTEN": f"127.0.0.1:{port}",
        "DMP_LOG_LEVEL": level,
    }
    return spawn([sys.executable, "-m", "dmp_audit"], root / log, env=env), port


def audit_channel(port: int) -> grpc.aio.Channel:
    """A channel to the audit process just spawned. gRPC waits a second after a failed connect
    before trying again, and the process is not listening yet: that wait would be counted in
    the time to serving. Here it retries every 20 ms, the polling interval of `until_serving`."""
    backoff = [
        ("grpc.initial_reconnect_backoff_ms", 20),
        ("grpc.min_reconnect_backoff_ms", 20),
        ("grpc.max_reconnect_backoff_ms", 20),
    ]
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=backoff)


async def until_serving(stub: audit_pb2_grpc.AuditServiceStub, n: int, started: float) -> float:
    """Seconds from `started` (perf_counter) until the service answers the checkpoint of the
    whole log of `n` entries."""
    while True:
        try:
            head = await stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=1)
            if head.checkpoint.size == n:
                return time.perf_counter() - started
        except grpc.aio.AioRpcError:
            pass
        assert time.perf_counter() - started < 300, "the audit service did not load the log"
        await asyncio.sleep(0.02)


async def timed_proofs(
    stub: audit_pb2_grpc.AuditServiceStub, n: int, count: int, rng: random.Random
) -> tuple[list[float], list[float]]:
    """Inclusion proofs of random entries (after 200 of warm-up), each followed by the floor
    call, ListPublicKeys: their durations in seconds."""
    target, floor = [], []
    for i in range(count + 200):
        seq = rng.randrange(n)
        t0 = time.perf_counter()
        await stub.GetInclusionProof(pb.GetInclusionProofRequest(seq=seq), timeout=5)
        t1 = time.perf_counter()
        await stub.ListPublicKeys(pb.ListPublicKeysRequest(), timeout=5)
        t2 = time.perf_counter()
        if i >= 200:
            target.append(t1 - t0)
            floor.append(t2 - t1)
    return target, floor


def audit_verify(n: int) -> dict[str, Any]:
    """Also runs `audit_proof` on the same log (building a million entries takes minutes)."""
    return asyncio.run(_verify_and_proofs(n, 2000))[0]
