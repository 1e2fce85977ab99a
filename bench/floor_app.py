"""The floor for the dossier benchmarks: a bare FastAPI route doing the same single MongoDB
operation as the platform, with nothing else (no auth, no consent, no audit, no gRPC)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from bson import Binary
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from uuid6 import uuid7

from dmp_dossier.store import CURRENT, listing_entries, of_dossier

client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(os.environ["DMP_MONGO_URL"])
listings = client["dossier"]["dossiers"]  # the records and their listings
floor = client["bench_floor"]["documents"]
app = FastAPI()


@app.get("/floor/list/{ins}")
async def list_documents(ins: str) -> dict[str, Any]:
    docs = [
        d
        async for listing in listings.find(of_dossier(ins), {"docs": 1})
        for d in listing_entries(listing)
    ]
    docs.sort(key=lambda d: (d["created_at"], d["_id"]), reverse=True)
    items = [
        {"id": d["_id"], "title": d["title"], "type_code": d["type_code"]}
        for d in docs
        if d["status"] in CURRENT
    ]
    return {"items": items[:200]}


@app.post("/floor/submit")
async def submit(body: dict[str, Any]) -> dict[str, str]:
    doc_id = str(uuid7())
    await floor.insert_one(
        {"_id": doc_id, "at": datetime.now(UTC), "content": Binary(body["content_base64"].encode())}
    )
    return {"id": doc_id}
