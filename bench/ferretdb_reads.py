"""What FerretDB's CPU goes to when a page of documents is read: `python -m bench.run
ferretdb_reads`.

FerretDB 1.24 on PostgreSQL turns every row it reads from JSONB into a document in Go, then
filters, sorts and projects in Go. On one server of its own, 200 document records of one
patient (shaped like the dossier service's) are read four ways, each 100 times after a
warm-up, measuring FerretDB's CPU time from /proc: the 200 records by `ins` (what a page
costs today, whatever its size: FerretDB sorts them all), the same with a light projection,
one index document holding the 200 records as an array, and one document holding them as a
single binary value (BSON the service would decode itself).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
from pymongo import MongoClient

from bench.run import database, saved
from dmp_stack.testing import own_infra

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _record(i: int, at: datetime) -> dict[str, Any]:
    return {
        "_id": f"doc-{i:06d}-{'a' * 20}",
        "ins": "180017512345660",
        "type_code": "11502-2",
        "section": "reports",
        "title": f"Compte rendu {i}",
        "author": "10000000001",
        "labels": [],
        "status": "approved",
        "created_at": at,
        "mime_type": "text/plain",
        "size": 4096,
        "sha256": "ab" * 32,
        "chunks": 1,
        "_v": 1,
        "outbox": [],
    }


def ferretdb_reads(calls: int) -> dict[str, Any]:
    with own_infra("dmp-bench-", fault_proxy=False) as infra:
        assert infra.mongo.pid is not None
        pid = infra.mongo.pid
        client: MongoClient[dict[str, Any]] = MongoClient(infra.mongo.url)
        db = client["bench_reads"]
        db.docs.create_index("ins")
        now = datetime.now(UTC)
        records = [_record(i, now) for i in range(200)]
        db.docs.insert_many(records)
        items = [{k: v for k, v in r.items() if k not in ("ins", "outbox", "_v")} for r in records]
        db.listing.insert_one({"_id": "180017512345660", "items": items})
        blob = bson.encode({"items": items})
        db.blob.insert_one({"_id": "180017512345660", "listing": bson.Binary(blob)})
        ways: dict[str, Callable[[], Any]] = {
            "200 records by ins": lambda: list(db.docs.find({"ins": "180017512345660"})),
            "200 records by ins, light projection": lambda: list(
                db.docs.find({"ins": "180017512345660"}, {"type_code": 1, "status": 1})
            ),
            "one document, the 200 records as an array": lambda: db.listing.find_one(
                {"_id": "180017512345660"}
            ),
            "one document, the 200 records as one binary": lambda: bson.decode(
                db.blob.find_one({"_id": "180017512345660"})["listing"]  # type: ignore[index]
            ),
        }
        out = {}
        for name, call in ways.items():
            for _ in range(10):
                call()
            cpu, wall = _cpu(pid), time.perf_counter()
            for _ in range(calls):
                call()
            out[name] = {
                "ferretdb_cpu_ms": round((_cpu(pid) - cpu) * 1000 / calls, 2),
                "wall_ms": round((time.perf_counter() - wall) * 1000 / calls, 2),
            }
        client.close()
    result = {
        "scenario": "ferretdb_reads",
        "description": " ".join(__doc__.split("\n\n")[1].split()) if __doc__ else "",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": database(),
        "binary_listing_bytes": len(blob),
        "calls": calls,
        "reads": out,
    }
    return saved("ferretdb_reads.json", result)
