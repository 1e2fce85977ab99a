"""Ingest benchmarks.

- `ingest_parse`: reading and checking 1,000,000 CSV rows in memory, on one core (CPU time).
  Floor: the csv module alone reading the same text.
- `ingest_write`: a 500,000-row file processed end to end by the service's worker (spool read,
  rows checked, claims written with insert_many, progress saved) against a raw insert_many of
  the same claims, already built, to the same server, in the same run.
- `ingest_5m`: a 5,000,000-row file end to end: rows/s, and the process's peak memory
  measured after 1, 2.5 and 5 million rows (flat means nothing grows with the file).
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import resource
import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.run import record, summary
from dmp_ingest import domain
from dmp_ingest.config import IngestSettings
from dmp_ingest.store import IngestStore, _doc
from dmp_ingest.work import Worker
from dmp_kit.clock import ManualClock
from dmp_stack.infra import start_mongo
from dmp_stack.stack import stop_started
from dmp_stack.testing import make_ins, make_rpps

HEADER = "claim_id,ins,care_date,kind,code,label,professional_rpps,amount_paid,amount_reimbursed\n"
CLOCK = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))


def rows(n: int, seed: int = 1, start: int = 0) -> Any:
    rng = random.Random(seed)
    patients = [make_ins(rng) for _ in range(20_000)]
    pros = [make_rpps(rng) for _ in range(2_000)]
    kinds = sorted(domain.KINDS)
    today = date(2026, 11, 23)
    dates = [(today - timedelta(days=d)).isoformat() for d in range(900)]
    for i in range(start, start + n):
        yield (
            f"C{i:010d},{rng.choice(patients)},{rng.choice(dates)},{rng.choice(kinds)},"
            f"CODE{i % 977},Libellé {i % 131},{rng.choice(pros)},23.00,16.10\n"
        )


def write_file(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        batch: list[str] = []
        for row in rows(n):
            batch.append(row)
            if len(batch) == 100_000:
                out.write("".join(batch))
                batch = []
        out.write("".join(batch))


def ingest_parse(n: int) -> dict[str, Any]:
    text = HEADER + "".join(rows(n))

    ours, floor = [], []
    for _ in range(3):
        t0 = time.process_time()
        count = sum(1 for _ in domain.read_csv(io.StringIO(text)))
        ours.append(time.process_time() - t0)
        assert count == n
        t0 = time.process_time()
        sum(1 for _ in csv.reader(io.StringIO(text)))
        floor.append(time.process_time() - t0)
    best = sorted(ours)[1]
    return record(
        "ingest_parse",
        f"Reading and checking {n:,} CSV claim rows in memory on one core (CPU time; INS and "
        "RPPS keys, dates, kinds, lengths; money dropped). Floor: csv.reader alone. Three runs.",
        summary(ours),
        summary(floor),
        {"rows": n, "rows_per_s": round(n / best), "target_rows_per_s": 200_000},
    )


async def _worker(url: str, name: str) -> tuple[AsyncMongoClient[Any], IngestStore, Worker, Path]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(url)
    store = IngestStore(client[name])
    await store.ensure_indexes()
    spool = Path(tempfile.mkdtemp(prefix="dmp-bench-spool-"))
    settings = IngestSettings(
        env="dev", spool_dir=str(spool),
    )  # fmt: skip
    worker = Worker(settings, store, CLOCK, None, None)  # type: ignore[arg-type] # no dossier open
    return client, store, worker, spool


async def _process(store: IngestStore, worker: Worker, source: Path, batch_id: str) -> float:
    await store.new_batch({"_id": batch_id, "status": "running", "format": "csv"})
    worker.spool(batch_id).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, worker.spool(batch_id))
    t0 = time.perf_counter()
    await worker.process(batch_id, "csv")
    elapsed = time.perf_counter() - t0
    doc = await store.batch(batch_id)
    assert doc is not None and doc["status"] == "done", doc
    return elapsed


async def _write(n: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="dmp-bench-ingest-"))
    mongo = start_mongo(root)
    try:
        client, store, worker, _ = await _worker(mongo.url, "bench_ingest")
        source = root / "claims.csv"
        write_file(source, n)
        claims = [c for _, c in domain.read_csv(source.open(encoding="utf-8"))]
        assert all(isinstance(c, domain.Claim) for c in claims)
        ours, raw = [], []
        for attempt in range(2):  # interleaved, each on a fresh collection
            await store.claims.drop()
            ours.append(await _process(store, worker, source, f"b{attempt}"))
            target = client["bench_ingest"][f"raw{attempt}"]
            docs = [_doc(c, "raw", CLOCK.now()) for c in claims]  # type: ignore[arg-type]
            t0 = time.perf_counter()
            for i in range(0, n, worker.settings.write_batch):
                await target.insert_many(docs[i : i + worker.settings.write_batch], ordered=False)
            raw.append(time.perf_counter() - t0)
        await client.close()
        ratio = min(raw) / min(ours)
        return record(
            "ingest_write",
            f"A {n:,}-row CSV file processed end to end by the worker (read from its spool, "
            "checked, insert_many by 2,000, progress saved) against a raw insert_many of the "
            "same claims already built, same server, same run. Two runs each, best kept.",
            summary(ours),
            summary(raw),
            {
                "rows": n,
                "rows_per_s": round(n / min(ours)),
                "raw_rows_per_s": round(n / min(raw)),
                "share_of_raw": round(ratio, 3),
                "target_share": 0.8,
            },
        )
    finally:
        stop_started(mongo)


async def _five_million(n: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="dmp-bench-ingest-"))
    mongo = start_mongo(root)
    try:
        client, store, worker, _ = await _worker(mongo.url, "bench_ingest_5m")
        source = root / "claims.csv"
        write_file(source, n)
        await store.new_batch({"_id": "big", "status": "running", "format": "csv"})
        spool = worker.spool("big")
        spool.parent.mkdir(parents=True, exist_ok=True)
        source.replace(spool)
        peaks: dict[str, float] = {}
        marks = {n // 5: "after_1m", n // 2: "after_2_5m"}

        async def watch() -> None:
            while True:
                doc = await store.batch("big")
                done = (doc or {}).get("accepted", 0)
                for at, label in marks.items():
                    if done >= at and label not in peaks:
                        peaks[label] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch())
        t0 = time.perf_counter()
        await worker.process("big", "csv")
        elapsed = time.perf_counter() - t0
        watcher.cancel()
        peaks["after_5m"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        doc = await store.batch("big")
        assert doc is not None and doc["accepted"] == n, doc
        await client.close()
        return record(
            "ingest_5m",
            f"A {n:,}-row CSV file end to end on FerretDB; the process's peak memory (max RSS, "
            "MB) after 1, 2.5 and 5 million rows. One run.",
            summary([elapsed]),
            summary([elapsed]),
            {
                "rows": n,
                "rows_per_s": round(n / elapsed),
                "peak_rss_mb": {k: round(v) for k, v in peaks.items()},
            },
        )
    finally:
        stop_started(mongo)


def ingest_write(n: int) -> dict[str, Any]:
    return asyncio.run(_write(n))


def ingest_5m(n: int) -> dict[str, Any]:
    return asyncio.run(_five_million(n))
