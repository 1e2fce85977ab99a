"""Cost follows the patient's data, not the platform's: `python -m bench.run dossier_growth`.

One patient with 50 documents (added through the gateway by their GP) is consulted on an idle
stack while the platform's documents grow around them, from 1,000 to 100,000 documents across
1,000 patients (copies of a real document's metadata, written straight to the other patients'
listings, and 4 kB of content each beside their dossier's record, where the platform stores a
document's content: the collection the reads go to grows as it would). At each
size, once the stack is idle again (PostgreSQL vacuums and analyses after such a load): a
page of 50 (p50 of sequential requests), and the dossier page as the portal opens it (the
dossier with its counts, then the list with the pending count).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bson import Binary
from pymongo import MongoClient

from bench.cost import cost_stack, processes, settle
from bench.run import RESULTS, _document, _patient_with_gp, database
from dmp_dossier.store import (
    CONTENT_OF,
    content_id,
    listing_entries,
    listing_fields,
    listing_id,
    listing_of,
    of_dossier,
)

SIZES = (1_000, 10_000, 30_000, 100_000)
CONTENT = Binary(os.urandom(4096 + 28))  # a 4 kB document sealed (its nonce and tag)
PATIENTS = 1_000
TARGETS = {"consult_p50_ms": 50.0, "dossier_page_p50_ms": 100.0, "flat_within": 0.20}


def _timed(call: Any, n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return round(statistics.median(samples) * 1000, 2)


def dossier_growth(largest: int) -> dict[str, Any]:
    sizes = [s for s in SIZES if s <= largest] or [largest]
    with cost_stack(Path(tempfile.mkdtemp(prefix="dmp-ops-"))) as running:
        ins, token = _patient_with_gp(running)
        with running.client(token) as c:
            for i in range(50):
                r = c.post(f"/v1/dossiers/{ins}/documents", json=_document(i, 512))
                assert r.status_code == 201, r.text
        mongo: MongoClient[dict[str, Any]] = MongoClient(os.environ["DMP_MONGO_URL"], tz_aware=True)
        listings = mongo["dossier"]["dossiers"]  # the records and their listings
        model = listing_entries(listings.find_one(of_dossier(ins), {"docs": 1}))[0]
        others: dict[str, list[dict[str, Any]]] = {}
        curve = []
        with httpx.Client(
            base_url=running.url, headers={"authorization": f"Bearer {token}"}, timeout=30
        ) as c:

            def consult() -> None:
                r = c.get(f"/v1/dossiers/{ins}/documents?page_size=50")
                assert r.status_code == 200 and len(r.json()["items"]) == 50, r.text

            def dossier_page() -> None:
                r = c.get(f"/v1/dossiers/{ins}")
                assert r.status_code == 200, r.text
                consult()

            written = 50
            for size in sizes:
                content = []
                for n in range(written, size):
                    other, doc_id = f"2{n % PATIENTS:014d}", f"bench-{n:07d}"
                    listed = listing_id(other, listing_of(doc_id))
                    others.setdefault(listed, []).append(
                        {
                            **model,
                            "_id": doc_id,
                            "ins": other,
                            "created_at": model["created_at"] - timedelta(minutes=n),
                            "listing": listing_of(doc_id),
                        }
                    )
                    content.append(
                        {"_id": content_id(other, doc_id, 0), CONTENT_OF: other, "data": CONTENT}
                    )
                for first in range(0, len(content), 1000):
                    listings.insert_many(content[first : first + 1000])
                for listed, docs in others.items():
                    listings.update_one(
                        {"_id": listed},
                        {"$set": listing_fields(docs[0]["ins"], docs)},
                        upsert=True,
                    )
                written = max(written, size)
                settle(processes(running))  # PostgreSQL's autovacuum after the load
                _timed(consult, 5)  # warm-up
                point = {
                    "documents_stored": sum(
                        len(listing_entries(d)) for d in listings.find({}, {"docs": 1})
                    ),
                    "consult_p50_ms": _timed(consult, 30),
                    "dossier_page_p50_ms": _timed(dossier_page, 30),
                }
                print(point, flush=True)
                curve.append(point)
        mongo.close()
    first, last = curve[0], curve[-1]
    growth = {
        k: round(last[k] / first[k] - 1, 3) for k in ("consult_p50_ms", "dossier_page_p50_ms")
    }
    result = {
        "scenario": "dossier_growth",
        "description": __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": database(),
        "patient_documents": 50,
        "curve": curve,
        "growth_first_to_last": growth,
        "targets": TARGETS,
        "meets_targets": last["consult_p50_ms"] <= TARGETS["consult_p50_ms"]
        and last["dossier_page_p50_ms"] <= TARGETS["dossier_page_p50_ms"]
        and all(g <= TARGETS["flat_within"] for g in growth.values()),
    }
    (RESULTS / f"{os.environ.get('DMP_BENCH_RESULT', 'dossier_growth')}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(json.dumps(result, indent=2))
    return result
