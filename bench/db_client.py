"""What one database round trip costs our process, over TCP and over a Unix socket:
`python -m bench.run db_client`.

A FerretDB of its own (PostgreSQL behind it) listens on loopback TCP and on a Unix socket. This
process, on the event loop the services run (uvloop) and with their driver (pymongo's
asynchronous client), reads one 4 KB document by `_id` `calls` times per round over each, the
two alternating for three rounds. Per read: this process's CPU time (user and system, all its
threads), FerretDB's, and the wall time. It asks whether the socket writes py-spy shows in the
services under load are the kernel's loopback delivery counted to the sender (then a Unix
socket would cost less) or the driver's own Python.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from pymongo import AsyncMongoClient

from bench.ferretdb_reads import _cpu
from bench.run import saved
from dmp_stack.infra import free_port, start_ferretdb
from dmp_stack.stack import stop_started

ROUNDS = 3
DOCUMENT = {"_id": "listing", "data": "x" * 4096}


async def _reads(url: str, calls: int, ferretdb: int) -> dict[str, float]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        docs = client["bench_client"]["docs"]
        await docs.replace_one({"_id": DOCUMENT["_id"]}, DOCUMENT, upsert=True)
        for _ in range(100):  # connections open, code paths warm
            await docs.find_one({"_id": DOCUMENT["_id"]})
        before, server, wall = os.times(), _cpu(ferretdb), time.perf_counter()
        for _ in range(calls):
            found = await docs.find_one({"_id": DOCUMENT["_id"]})
            assert found is not None and len(found["data"]) == 4096
        after = os.times()
        return {
            "ours_cpu_ms": (after.user + after.system - before.user - before.system) / calls * 1e3,
            "ours_system_ms": (after.system - before.system) / calls * 1e3,
            "ferretdb_cpu_ms": (_cpu(ferretdb) - server) / calls * 1e3,
            "wall_ms": (time.perf_counter() - wall) / calls * 1e3,
        }
    finally:
        await client.close()


def db_client(calls: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="dmp-bench-"))
    port = free_port()
    started = start_ferretdb(root, port, "postgresql", listen_unix=root / "ferretdb.sock")
    assert started.pid is not None
    urls = {"tcp": started.url, "unix socket": started.extra["unix_url"]}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    try:
        for _ in range(ROUNDS):
            for name, url in urls.items():
                rounds[name].append(uvloop.run(_reads(url, calls, started.pid)))
    finally:
        stop_started(started)  # FerretDB, then its PostgreSQL
    per_read = {
        name: {
            key: round(statistics.median(r[key] for r in runs), 3)
            for key in ("ours_cpu_ms", "ours_system_ms", "ferretdb_cpu_ms", "wall_ms")
        }
        | {"rounds": [{k: round(v, 3) for k, v in r.items()} for r in runs]}
        for name, runs in rounds.items()
    }
    result = {
        "scenario": "db_client",
        "description": " ".join(__doc__.split("\n\n")[1].split()) if __doc__ else "",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": "ferretdb postgresql",
        "calls": calls,
        "per_read": per_read,
    }
    return saved("db_client.json", result)
