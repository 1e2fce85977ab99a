"""FerretDB's two storage backends side by side (`python -m bench.ferretdb_backends`).

Why the long runs use PostgreSQL: the same operations, timed on FerretDB/SQLite and
FerretDB/PostgreSQL, each server started for this run alone, as a collection grows to 300,
3,000 and 9,000 documents of about 600 bytes. Median of 20 calls per operation and size.
Results: bench/results/ferretdb-backends.json.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection

from dmp_stack.testing import own_infra

RESULTS = Path(__file__).parent / "results" / "ferretdb-backends.json"
SIZES = (300, 3_000, 9_000)


def median_ms(call: Callable[[int], object], reps: int = 20) -> float:
    times = []
    for rep in range(reps):
        start = time.perf_counter()
        call(rep)
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def timings(docs: Collection[dict[str, Any]], size: int) -> dict[str, float]:
    # Spread the documents touched over the collection (not only its first rows).
    spot = size // 20
    return {
        "find_one by _id": median_ms(lambda r: docs.find_one({"_id": f"d{r * spot}"})),
        "find_one by indexed key": median_ms(lambda r: docs.find_one({"key": f"k{r * spot}"})),
        "update_one by _id": median_ms(
            lambda r: docs.update_one({"_id": f"d{r * spot}"}, {"$set": {"state": "a"}})
        ),
        "find_one_and_update by key": median_ms(
            lambda r: docs.find_one_and_update(
                {"key": f"k{r * spot}"},
                {"$inc": {"n": 1}},
                return_document=ReturnDocument.AFTER,
            )
        ),
        "a dossier's newest 20": median_ms(
            lambda r: list(docs.find({"dossier": f"p{r}"}).sort("at", -1).limit(20))
        ),
        "insert_one": median_ms(
            lambda r: docs.insert_one({"key": f"n{size}-{r}", "dossier": "p0", "at": -r})
        ),
    }


def measure(url: str) -> dict[int, dict[str, float]]:
    client: MongoClient[dict[str, Any]]
    with MongoClient(url) as client:
        docs: Collection[dict[str, Any]] = client["bench_backends"]["docs"]
        docs.create_index("key", unique=True)
        docs.create_index([("dossier", 1), ("at", 1)])
        found: dict[int, dict[str, float]] = {}
        have = 0
        for size in SIZES:
            docs.insert_many(
                [
                    {"_id": f"d{i}", "key": f"k{i}", "dossier": f"p{i % 50}", "at": i,
                     "body": "x" * 500, "state": "new"}
                    for i in range(have, size)
                ]
            )  # fmt: skip
            have = size
            found[size] = timings(docs, size)
            print(json.dumps({"size": size, **found[size]}), flush=True)
        return found


def main() -> None:
    saved = os.environ.pop("DMP_MONGO_URL", None)
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        for backend in ("sqlite", "postgresql"):
            os.environ["DMP_FERRETDB_BACKEND"] = backend
            with own_infra(f"dmp-bench-{backend}-", fault_proxy=False) as infra:
                print(f"FerretDB on {backend}", flush=True)
                result[backend] = measure(infra.mongo.url)
    finally:
        os.environ.pop("DMP_FERRETDB_BACKEND", None)
        if saved is not None:
            os.environ["DMP_MONGO_URL"] = saved
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
