"""Outbox benchmarks: how soon a stored change is published, traced and notified.

- `outbox_lag`: a GP adds 4 KB documents open-loop at 50/s; for each `document.added` event,
  the time from its `occurred_at` (set by the dossier service just before its write) to the
  JetStream stream timestamp of its message (the relay's publish, acknowledged). Target: p99
  ≤ 250 ms; also at 25/s. Floor: the same, one document every 0.2 s.
- `outbox_burst`: N documents (3,000) written by 16 concurrent writers for 4 patients, as fast
  as the stack accepts them; from the last acknowledged write until every one is published
  (`document.added` in DOSSIER), traced (its `create` entry in audit's log) and notified (the
  patient's inbox entry). Target: all three within 30 s. The backlog left at the last write,
  divided by the time it took to go, is the drain rate.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
from nats.errors import TimeoutError as NatsTimeoutError
from pymongo import AsyncMongoClient

from bench.run import Load, _document, _gp_submits, _patient_with_gp, bench_stack, record, summary
from dmp.events.v1 import envelope_pb2
from dmp_audit.store import unpack
from dmp_kit.bus import EventBus
from dmp_stack.testing import RunningStack

LAG_RATE = 50
BELOW_RATE = 25  # what the stack sustains here with room to spare
LAG_TARGET_P99_MS = 250
BURST_WRITERS = 16
BURST_PATIENTS = 4
BURST_TARGET_S = 30.0


@dataclass
class Published:
    """`document.added` events as JetStream holds them: per document, (occurred, stored) in
    seconds since the epoch."""

    times: dict[str, tuple[float, float]] = field(default_factory=dict)
    duplicates: int = 0


async def follow_added(nats_url: str, seen: Published, stop: asyncio.Event) -> None:
    """Reads `document.added` from the start of the DOSSIER stream until `stop`."""
    bus = EventBus(nats_url, "bench-reader")
    await bus.connect()
    sub = await bus.js.pull_subscribe(
        "document.added", durable=f"bench_{secrets.token_hex(4)}", stream="DOSSIER"
    )
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(512, timeout=0.5)
            except (TimeoutError, NatsTimeoutError):
                continue
            for msg in msgs:
                event = envelope_pb2.Envelope.FromString(msg.data)
                doc_id = event.document_added.document_id
                if doc_id in seen.times:
                    seen.duplicates += 1
                occurred = event.occurred_at.ToDatetime(tzinfo=UTC).timestamp()
                seen.times[doc_id] = (occurred, msg.metadata.timestamp.timestamp())
                await msg.ack()
    finally:
        await sub.unsubscribe()
        await bus.close()


def _cpu(pid: int, children: bool = False) -> float:
    """A process's CPU seconds (with its reaped children's, for PostgreSQL's postmaster)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds(running: RunningStack) -> dict[str, float]:
    """CPU seconds so far of each service process, FerretDB and its PostgreSQL."""
    out = {name: _cpu(pid) for name, pid in running.state.processes.items()}
    mongo = running.infra.mongo
    if mongo.pid:
        out["ferretdb"] = _cpu(mongo.pid)
    for postmaster in mongo.also:
        total = _cpu(postmaster, children=True)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == postmaster:
                total += _cpu(int(stat.parent.name))
        out["postgresql"] = out.get("postgresql", 0.0) + total
    return out


def cpu_per_document(
    before: dict[str, float], after: dict[str, float], documents: int
) -> dict[str, float]:
    """Milliseconds of CPU per document written, per process."""
    return {
        name: round((after[name] - before.get(name, 0.0)) * 1000 / max(1, documents), 2)
        for name in sorted(after)
    }


# --- outbox_lag ------------------------------------------------------------------------------


def outbox_lag(seconds: int) -> dict[str, Any]:
    with bench_stack() as running:
        _, platform = _gp_submits(running)
        return asyncio.run(_outbox_lag(running, platform, seconds))


async def _outbox_lag(
    running: RunningStack, platform: Callable[[httpx.AsyncClient], Any], seconds: int
) -> dict[str, Any]:
    seen = Published()
    stop = asyncio.Event()
    reader = asyncio.create_task(follow_added(running.infra.nats.url, seen, stop))
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as c:
            for _ in range(10):  # warm-up
                await platform(c)
            before = set(await _lags(seen, 10))
            for _ in range(50):
                await platform(c)
                await asyncio.sleep(0.2)
        lags = await _lags(seen, 60)
        quiet = {k: v for k, v in lags.items() if k not in before}
        below = await Load(running.url).open(platform, BELOW_RATE, seconds)
        lags = await _lags(seen, 60 + below["n"] - below["errors"])
        half = {k: v for k, v in lags.items() if k not in before and k not in quiet}
        expected = len(lags)
        cpu_before = cpu_seconds(running)
        load = await Load(running.url).open(platform, LAG_RATE, seconds)
        lags = await _lags(seen, expected + load["n"] - load["errors"])
        cpu = cpu_per_document(cpu_before, cpu_seconds(running), load["n"] - load["errors"])
        loaded = {
            k: v for k, v in lags.items() if k not in before and k not in quiet and k not in half
        }
    finally:
        stop.set()
        await reader
    target = summary(list(loaded.values()))
    return record(
        "outbox_lag",
        "Write → publish lag of document.added events (the event's occurred_at, set just before "
        f"the write, to its JetStream stream timestamp) while a GP adds 4 KB documents open-loop "
        f"at {LAG_RATE}/s. Target: p99 <= {LAG_TARGET_P99_MS} ms. Floor: the same, one document "
        "every 0.2 s.",
        target,
        summary(list(quiet.values())),
        {
            "rate_per_s": LAG_RATE,
            "seconds": seconds,
            "submit": load,
            f"at_{BELOW_RATE}_per_s": {"lag": summary(list(half.values())), "submit": below},
            "cpu_ms_per_document": cpu,
            "duplicates": seen.duplicates,
            "target_p99_ms": LAG_TARGET_P99_MS,
            "meets_target": target["p99_ms"] <= LAG_TARGET_P99_MS,
        },
    )


async def _lags(seen: Published, expected: int, wait: float = 120) -> dict[str, float]:
    for _ in range(int(wait / 0.2)):
        if len(seen.times) >= expected:
            break
        await asyncio.sleep(0.2)
    return {k: stored - occurred for k, (occurred, stored) in seen.times.items()}


# --- outbox_burst ----------------------------------------------------------------------------


def outbox_burst(documents: int) -> dict[str, Any]:
    with bench_stack() as running:
        patients = [_patient_with_gp(running) for _ in range(BURST_PATIENTS)]
        return asyncio.run(_outbox_burst(running, patients, documents))


@dataclass
class Progress:
    """What has reached each stage, sampled: (time since the epoch, count)."""

    published: list[tuple[float, int]] = field(default_factory=list)
    traced: list[tuple[float, int]] = field(default_factory=list)
    notified: list[tuple[float, int]] = field(default_factory=list)


async def _outbox_burst(
    running: RunningStack, patients: list[tuple[str, str]], documents: int
) -> dict[str, Any]:
    seen = Published()
    stop = asyncio.Event()
    reader = asyncio.create_task(follow_added(running.infra.nats.url, seen, stop))
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        running.infra.mongo.url, tz_aware=True
    )
    written: set[str] = set()
    progress = Progress()
    errors = 0
    next_index = 0
    answers: list[float] = []
    body = _document(0)

    async def writer(c: httpx.AsyncClient) -> None:
        nonlocal errors, next_index
        while next_index < documents:
            i = next_index
            next_index += 1
            ins, token = patients[i % len(patients)]
            try:
                r = await c.post(
                    f"/v1/dossiers/{ins}/documents",
                    json=body,
                    headers={"authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError:
                errors += 1
                continue
            if r.status_code == 201:
                written.add(r.json()["id"])
                answers.append(time.time())
            else:
                errors += 1

    watcher = asyncio.create_task(_watch(mongo, patients, written, seen, progress))
    try:
        limits = httpx.Limits(max_connections=BURST_WRITERS)
        async with httpx.AsyncClient(base_url=running.url, timeout=60, limits=limits) as c:
            cpu_before = cpu_seconds(running)
            started = time.time()
            await asyncio.gather(*(writer(c) for _ in range(BURST_WRITERS)))
        last_write = max(answers)
        cpu_written = cpu_seconds(running)
        for _ in range(1200):  # ten minutes at most
            if _done(progress, len(written)):
                break
            await asyncio.sleep(0.5)
        cpu = cpu_per_document(cpu_before, cpu_seconds(running), len(written))
        cpu_writing = cpu_per_document(cpu_before, cpu_written, len(written))
    finally:
        watcher.cancel()
        stop.set()
        await reader
        await mongo.close()
    n = len(written)
    write_rate = n / (last_write - started)
    stages = {
        stage: _stage(getattr(progress, stage), n, last_write)
        for stage in ("published", "traced", "notified")
    }
    publish_lags = [s - o for d, (o, s) in seen.times.items() if d in written]
    after = max(s["seconds_after_last_write"] or 1e9 for s in stages.values())
    result = summary(publish_lags)
    return record(
        "outbox_burst",
        f"{documents} documents of 4 KB written by {BURST_WRITERS} concurrent writers for "
        f"{len(patients)} patients as fast as the stack accepts them; from the last acknowledged "
        "write until all are published (document.added in DOSSIER), traced (their create "
        "entries in audit's log) and notified (the patients' inbox entries). Target: all "
        f"within {BURST_TARGET_S:.0f} s. Sample: each event's write -> publish lag. Floor: "
        "the same sample (no floor run).",
        result,
        result,
        {
            "documents": documents,
            "acknowledged": n,
            "errors": errors,
            "write_seconds": round(last_write - started, 2),
            "write_rate_per_s": round(write_rate, 1),
            **stages,
            "cpu_ms_per_document": cpu,
            "cpu_ms_per_document_until_last_write": cpu_writing,
            "duplicates_published": seen.duplicates,
            "seconds_after_last_write": round(after, 2),
            "target_seconds": BURST_TARGET_S,
            "meets_target": after <= BURST_TARGET_S,
        },
    )


def _done(progress: Progress, n: int) -> bool:
    return all(
        samples and samples[-1][1] >= n
        for samples in (progress.published, progress.traced, progress.notified)
    )


def _stage(samples: list[tuple[float, int]], n: int, last_write: float) -> dict[str, Any]:
    """When a stage had everything, and how fast it drained what was left at the last write."""
    at_last = max((c for t, c in samples if t <= last_write), default=0)
    done = next((t for t, c in samples if c >= n), None)
    after = None if done is None else max(0.0, done - last_write)
    backlog = n - at_last
    return {
        "backlog_at_last_write": backlog,
        "seconds_after_last_write": None if after is None else round(after, 2),
        "drain_rate_per_s": round(backlog / after, 1) if after else None,
        "reached": samples[-1][1] if samples else 0,
    }


async def _watch(
    mongo: AsyncMongoClient[dict[str, Any]],
    patients: list[tuple[str, str]],
    written: set[str],
    seen: Published,
    progress: Progress,
) -> None:
    """Every half second: how many written documents are published, traced, notified."""
    chunks = mongo["audit"]["chunks"]
    notifications = mongo["notify"]["notifications"]
    traced: set[str] = set()
    read_to = -1
    while True:
        now = time.time()
        progress.published.append((now, len(written & set(seen.times))))
        async for chunk in chunks.find({"_id": {"$gt": read_to}}).sort("_id", 1):
            read_to = chunk["_id"]
            for line in unpack(chunk["data"], chunk["count"]):
                entry = json.loads(line)
                if entry["action"] == "create" and entry["entity"]["document_id"]:
                    traced.add(entry["entity"]["document_id"])
        progress.traced.append((now, len(written & traced)))
        notified = 0
        for ins, _ in patients:
            notified += await notifications.count_documents(
                {"recipient": f"patient:{ins}", "kind": "document_added"}
            )
        progress.notified.append((now, notified))
        await asyncio.sleep(0.5)
