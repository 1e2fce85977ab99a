"""The capacity plan's figures (docs/scaling.md).

`python -m bench.run storage_per_document` measures what one document, one read and one trail
entry take once stored: a stack of its own on the default database, GPs adding documents of
4 KB to their patients' dossiers and reading each back, then every collection of every service
sized (BSON of a sample of its documents times its count; MongoDB's WiredTiger compresses on
disk, so these are upper bounds of the data, indexes apart) and every JetStream stream's bytes.

`python -m bench.capacity` computes the national plan from the recorded results
(bench/results/request_cost.json, storage_per_document.json, audit_scale.json): the load
below, its peak, the cores each process needs, the storage a year adds. Change the load's
figures here and run it again; docs/scaling.md shows its output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
from typing import Any

import bson
import httpx
import nats
from pymongo import AsyncMongoClient

from bench.run import BENCH_ENV, RESULTS, _document, _patient_with_gp, header, saved
from dmp_stack.testing import RunningStack, own_infra, running_stack, until

# What a service stores, by database; the collections a document's life touches.
DATABASES = ("dossier", "audit", "notify", "consent", "identity", "agenda")
DOCUMENT_BYTES = 4096
PATIENTS = 10
DOCUMENTS_PER_PATIENT = 50

# The national load (issue 23): 40 million open records, 420 million documents a year, about a
# billion trail entries a year. Assumptions of ours, stated in docs/scaling.md: reads are
# twice the documents added; activity falls on 250 working days of 10 hours; the busiest hour
# carries PEAK_FACTOR times the mean of those hours; a core is planned at 60 % busy.
RECORDS = 40_000_000
DOCUMENTS_PER_YEAR = 420_000_000
TRAIL_ENTRIES_PER_YEAR = 1_000_000_000
CONSULTS_PER_DOCUMENT = 2.0
WORKING_SECONDS_PER_YEAR = 250 * 10 * 3600
PEAK_FACTOR = 3.0
CORE_UTILISATION = 0.6
MEAN_DOCUMENT_BYTES = 150_000  # a CDA/PDF report: content dominates every other figure
# Development only: every message sent, kept for /dev/outbox.
DEV_ONLY = {("notify", "dev_outbox")}
STREAM_MAX_AGE_DAYS = 14  # DMP_NATS_STREAM_MAX_AGE_DAYS in production
STREAM_REPLICAS = 3
PROCESSES = ("gateway", "identity", "dossier", "consent", "audit", "notify")


# Collections holding two kinds of records, sized apart: the dossiers' records and listings,
# and the documents' content stored beside them (since 2026-12-06; `chunks` before).
PARTS = {
    ("dossier", "dossiers"): {
        "dossiers": {"content_of": {"$exists": False}},
        "content": {"content_of": {"$exists": True}},
    }
}
# Where documents' content is, by database and collection (or part).
CONTENT = (("dossier", "chunks"), ("dossier", "content"))


async def _sizes(url: str, documents: int) -> dict[str, dict[str, float]]:
    """Bytes per document added, by database and collection."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    out: dict[str, dict[str, float]] = {}
    try:
        for name in DATABASES:
            db = client[name]
            for coll in sorted(await db.list_collection_names()):
                for part, query in PARTS.get((name, coll), {coll: {}}).items():
                    count = await db[coll].count_documents(query)
                    found = db[coll].find(query, limit=200)
                    sample = [len(bson.encode(d)) async for d in found]
                    if count and sample:
                        total = count * statistics.mean(sample)
                        out.setdefault(name, {})[part] = round(total / documents, 1)
    finally:
        await client.close()
    return out


async def _streams(url: str, documents: int) -> dict[str, float]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return {
            s.config.name or "?": round((s.state.bytes or 0) / documents, 1)
            for s in await js.streams_info()
        }
    finally:
        await nc.close()


def storage_per_document(documents_per_patient: int) -> dict[str, Any]:
    documents = PATIENTS * documents_per_patient
    with (
        own_infra("dmp-bench-", fault_proxy=False) as infra,
        running_stack(infra, env=BENCH_ENV) as running,
    ):
        reads = _fill(running, documents_per_patient)
        entries = _audit_settled(running)
        by_db = asyncio.run(_sizes(infra.mongo.url, documents))
        streams = asyncio.run(_streams(infra.nats.url, documents))
    per_db = {name: round(sum(colls.values()), 1) for name, colls in by_db.items()}
    content = sum(by_db.get(db, {}).get(coll, 0.0) for db, coll in CONTENT)
    result = {
        **header("storage_per_document", __doc__.split("\n\n")[1] if __doc__ else ""),
        "documents": documents,
        "document_bytes": DOCUMENT_BYTES,
        "reads": reads,
        "trail_entries": entries,
        "bytes_per_document": per_db,
        "bytes_per_document_by_collection": by_db,
        "content_overhead": round(content / DOCUMENT_BYTES, 3),
        "bytes_per_document_without_content": round(sum(per_db.values()) - content, 1),
        "stream_bytes_per_document": streams,
        "trail_entries_per_document": round(entries / documents, 2),
    }
    return saved("storage_per_document.json", result)


def _fill(running: RunningStack, per_patient: int) -> int:
    """PATIENTS dossiers, each with its GP adding `per_patient` documents and reading each
    once; the reads made."""
    reads = 0
    for _ in range(PATIENTS):
        ins, token = _patient_with_gp(running)
        with running.client(token) as c:
            ids = []
            for i in range(per_patient):
                r = c.post(f"/v1/dossiers/{ins}/documents", json=_document(i, DOCUMENT_BYTES))
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            for doc_id in ids:
                assert c.get(f"/v1/dossiers/{ins}/documents/{doc_id}/content").status_code == 200
                reads += 1
    return reads


def _audit_settled(running: RunningStack) -> int:
    """The audit log's size once it stops growing."""
    last = [-1]

    def settled() -> bool:
        size = int(httpx.get(f"{running.url}/v1/audit/checkpoint", timeout=10).json()["size"])
        same, last[0] = size == last[0], size
        return same

    assert until(settled, timeout=120, interval=3.0)
    return last[0]


def plan() -> dict[str, Any]:
    """The national load's needs, from the recorded results."""
    cost = json.loads((RESULTS / "request_cost.json").read_text())
    storage = json.loads((RESULTS / "storage_per_document.json").read_text())
    audit = json.loads((RESULTS / "audit_scale.json").read_text())
    mean_submit = DOCUMENTS_PER_YEAR / WORKING_SECONDS_PER_YEAR
    rates = {  # requests per second at the busiest hour
        "submit": PEAK_FACTOR * mean_submit,
        "consult_50": PEAK_FACTOR * mean_submit * CONSULTS_PER_DOCUMENT,
    }
    cores: dict[str, float] = {}
    for kind, rate in rates.items():
        per = cost[kind]["cpu_ms_per_request"]
        for name in (*PROCESSES, "ferretdb", "postgres"):
            cores[name] = cores.get(name, 0.0) + rate * per.get(name, 0.0) / 1000
    needed = {name: round(c / CORE_UTILISATION, 1) for name, c in cores.items()}
    ops = {kind: round(rate * cost[kind]["db_ops"]) for kind, rate in rates.items()}
    by_collection = storage["bytes_per_document_by_collection"]
    per_document = sum(
        size
        for db, colls in by_collection.items()
        for coll, size in colls.items()
        if (db, coll) not in DEV_ONLY and (db, coll) not in CONTENT
    )
    content = storage["content_overhead"] * MEAN_DOCUMENT_BYTES
    trail = sum(audit["bytes_per_entry"].values())
    year = {
        "documents_content_tb": round(DOCUMENTS_PER_YEAR * content / 1e12, 1),
        "documents_metadata_tb": round(DOCUMENTS_PER_YEAR * per_document / 1e12, 2),
        "streams_tb_if_kept": round(
            DOCUMENTS_PER_YEAR * sum(storage["stream_bytes_per_document"].values()) / 1e12, 2
        ),
        "audit_log_tb": round(TRAIL_ENTRIES_PER_YEAR * trail / 1e12, 2),
        "audit_hashes_gb": round(TRAIL_ENTRIES_PER_YEAR * audit["hash_bytes_per_entry"] / 1e9, 1),
    }
    stream_bytes = sum(storage["stream_bytes_per_document"].values())
    kept = DOCUMENTS_PER_YEAR / 365 * STREAM_MAX_AGE_DAYS
    return {
        "load": {
            "records": RECORDS,
            "documents_per_year": DOCUMENTS_PER_YEAR,
            "trail_entries_per_year": TRAIL_ENTRIES_PER_YEAR,
            "peak_factor": PEAK_FACTOR,
            "peak_per_s": {k: round(v, 1) for k, v in rates.items()},
            "trail_entries_peak_per_s": round(
                PEAK_FACTOR * TRAIL_ENTRIES_PER_YEAR / WORKING_SECONDS_PER_YEAR, 1
            ),
        },
        "cores_at_peak": needed,
        "cores_ours": round(sum(v for k, v in needed.items() if k in PROCESSES), 1),
        "cores_database_ferretdb": round(needed["ferretdb"] + needed["postgres"], 1),
        "database_operations_peak_per_s": ops,
        "storage_per_year": year,
        "storage_per_year_tb": round(sum(v for k, v in year.items() if k.endswith("_tb")), 1),
        "jetstream": {
            "bytes_per_document": round(stream_bytes),
            "max_age_days": STREAM_MAX_AGE_DAYS,
            "replicas": STREAM_REPLICAS,
            "disk_gb_per_server": round(kept * stream_bytes / 1e9, 1),
            "disk_gb_all_replicas": round(STREAM_REPLICAS * kept * stream_bytes / 1e9, 1),
        },
        "audit_sequencer": {
            "append_per_s_measured": _append_rate(),
            "peak_needed_per_s": round(
                PEAK_FACTOR * TRAIL_ENTRIES_PER_YEAR / WORKING_SECONDS_PER_YEAR, 1
            ),
        },
        "from": {
            "request_cost": cost["measured_at"],
            "storage_per_document": storage["measured_at"],
            "audit_scale": audit["measured_at"],
        },
    }


def _append_rate() -> float:
    path = RESULTS / "audit_append.json"
    if not path.exists():
        return math.nan
    data = json.loads(path.read_text())
    return float(data.get("entries_per_s", data.get("target", {}).get("throughput_per_s", 0)))


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    print(json.dumps(plan(), indent=2))


if __name__ == "__main__":
    main()
