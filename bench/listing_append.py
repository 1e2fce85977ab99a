"""What adding one document to a listing costs the dossier service, by how many the listing
holds: `python -m bench.run listing_append`.

A new document is written into one of its dossier's 32 listings, whose metadata is one binary
value. Until 2026-12-06 that value was one BSON document `{"d": [documents]}`: each addition
decoded every document listed and encoded them all again with the new one. Since, the value is
the documents' BSON one after the other, and an addition appends the new one's
(`dmp_dossier.store.adding`). Both are timed here in this process (CPU time, no server: the
database's side is not in it), for listings of realistic entries holding 10 to 1,000
documents (a dossier of 320 to 32,000), with the read of such a listing (`listing_entries`)
beside them.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

import bson
from bson import Binary

from bench.run import header, saved
from dmp_dossier.store import CODEC, NewDocument, adding, listing_entries, listing_fields

ROUNDS = 3
SIZES = (10, 50, 200, 1000)
INS = "185127512345678"


def _entry(n: int) -> dict[str, Any]:
    """A document's metadata as the dossier service lists it (about 420 bytes of BSON)."""
    return {
        "_id": str(uuid.uuid4()),
        "ins": INS,
        "type_code": "11488-4",
        "section": "reports",
        "title": f"Compte rendu de consultation {n}",
        "author": "10000000006",
        "author_kind": "professional",
        "created_at": datetime.now(UTC),
        "service_start": None,
        "mime_type": "application/pdf",
        "size": 4096,
        "sha256": os.urandom(32).hex(),
        "sha1": os.urandom(20).hex(),
        "labels": [],
        "status": "approved",
        "reminded": False,
        "listing": 7,
        "chunks": 1,
    }


def _before(listing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The addition as it was: every document decoded, all encoded again with the new one."""
    docs = bson.decode(bytes(listing["docs"]), codec_options=CODEC)["d"]
    return {"ins": INS, "docs": Binary(bson.encode({"d": [new, *docs]}))}


def _per_call_ms(call: Any, calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) * 1000 / calls


def _size(size: int, calls: int) -> dict[str, Any]:
    """The figures for listings of `size` documents, in each layout."""
    docs = [_entry(n) for n in range(size)]
    earlier = {"_id": f"{INS}:07", "ins": INS, "docs": Binary(bson.encode({"d": docs}))}
    now = {"_id": f"{INS}:07", **listing_fields(INS, docs)}
    item = NewDocument(_entry(size), b"", ())
    add = adding(INS, [item])
    assert len(listing_entries(add(now))) == size + 1  # appended, every one kept
    n = max(20, calls // size)
    timed = {
        "before": partial(_before, earlier, item.doc),
        "now": partial(add, now),
        "read_before": partial(listing_entries, earlier),
        "read_now": partial(listing_entries, now),
    }
    rounds: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(ROUNDS):  # interleaved
        for name, call in timed.items():
            rounds[name].append(_per_call_ms(call, n))
    medians = {k: round(statistics.median(v), 4) for k, v in rounds.items()}
    return {
        "listing_bytes": len(bytes(now["docs"])),
        "add_cpu_ms": {"before": medians["before"], "now": medians["now"]},
        "read_cpu_ms": {"before": medians["read_before"], "now": medians["read_now"]},
        "rounds": {k: [round(x, 4) for x in v] for k, v in rounds.items()},
    }


def listing_append(calls: int) -> dict[str, Any]:
    sizes = {str(size): _size(size, calls) for size in SIZES}
    result = {
        **header("listing_append", " ".join(__doc__.split("\n\n")[1].split()) if __doc__ else ""),
        "database": "none (in process)",
        "calls": calls,
        "by_documents_listed": sizes,
    }
    return saved("listing_append.json", result)
