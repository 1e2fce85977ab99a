"""All of ingest's database access: batches, claims, the dossiers it keeps a REMB for.

- `batches`: one per submitted file: status, counts, the first refused rows.
- `claims`: keyed by the insurer's client id and its `claim_id` (a claim the same insurer sends
  again replaces the stored one; another insurer's claim of the same id is another claim).
  Never an amount.
- `dossiers`: which dossiers are open, from the dossier service's events, the id of the REMB
  document ingest last wrote to each, and `remb_due`, the day its history next changes by time
  alone (a claim ages out of the 24 months, or a later-dated one enters them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import Any

from pymongo.errors import BulkWriteError

from dmp_ingest.domain import Claim
from dmp_kit.mongo import DUPLICATE_KEY, Document, Store


class IngestStore(Store):
    @cached_property
    def batches(self) -> Any:
        return self.db["batches"]

    @cached_property
    def claims(self) -> Any:
        return self.db["claims"]

    @cached_property
    def dossiers(self) -> Any:
        return self.db["dossiers"]

    async def ensure_indexes(self) -> None:
        await self.claims.create_index("ins")
        await self.dossiers.create_index("remb_due", sparse=True)

    # batches -------------------------------------------------------------------------

    async def new_batch(self, doc: Document) -> None:
        await self.batches.insert_one(doc)

    async def batch(self, batch_id: str) -> Document | None:
        doc: Document | None = await self.batches.find_one({"_id": batch_id})
        return doc

    async def update_batch(self, batch_id: str, fields: Document) -> None:
        await self.batches.update_one({"_id": batch_id}, {"$set": fields})

    async def running_batches(self) -> list[Document]:
        return [doc async for doc in self.batches.find({"status": "running"})]

    # claims --------------------------------------------------------------------------

    async def write_claims(
        self, claims: Sequence[Claim], insurer: str, batch_id: str, now: datetime
    ) -> None:
        """Insert in bulk; a claim this insurer already sent (a resubmission) is replaced."""
        docs = [_doc(c, insurer, batch_id, now) for c in claims]
        if not docs:
            return
        try:
            await self.claims.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                if error.get("code") != DUPLICATE_KEY:
                    raise
                doc = docs[error["index"]]
                await self.claims.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def dispensed(self, ins: str, rpps: str, since: str) -> bool:
        """A drug claim of this patient by this professional on or after `since` (ISO date)."""
        found = await self.claims.find_one(
            {"ins": ins, "professional_rpps": rpps, "kind": "drug", "care_date": {"$gte": since}},
            projection={"_id": 1},
        )
        return found is not None

    async def claims_of(self, ins: str) -> list[Claim]:
        return [_claim(d) async for d in self.claims.find({"ins": ins})]

    # dossiers ------------------------------------------------------------------------

    async def set_open(self, ins: str, is_open: bool, order: int) -> bool:
        """Newest event wins; True when this changed what we knew."""
        async with self.locks.hold("dossiers", ins):
            doc = await self.dossiers.find_one({"_id": ins}) or {"_id": ins, "order": -1}
            if doc["order"] >= order:
                return False
            doc.update(open=is_open, order=order)
            await self.dossiers.replace_one({"_id": ins}, doc, upsert=True)
            return True

    async def open_dossiers(self) -> set[str]:
        return {d["_id"] async for d in self.dossiers.find({"open": True}, {"_id": 1})}

    async def is_open(self, ins: str) -> bool:
        doc = await self.dossiers.find_one({"_id": ins})
        return bool(doc and doc.get("open"))

    async def remb_id(self, ins: str) -> str:
        doc = await self.dossiers.find_one({"_id": ins})
        return str((doc or {}).get("remb_document_id", ""))

    async def set_remb(self, ins: str, document_id: str, due: str | None) -> None:
        """The REMB document now in the dossier (unchanged if none is given), and the day its
        history is next due to change (None: never, until new claims come)."""
        update: Document = {"$set": {"remb_due": due}} if due else {"$unset": {"remb_due": ""}}
        if document_id:
            update.setdefault("$set", {})["remb_document_id"] = document_id
        await self.dossiers.update_one({"_id": ins}, update)

    async def remb_due(self, today: str, limit: int) -> list[str]:
        """Open dossiers whose history changes by `today` (YYYY-MM-DD): an indexed query, so a
        daily pass costs what the dossiers concerned cost, not what all of them do."""
        cursor = self.dossiers.find({"remb_due": {"$lte": today}, "open": True}, {"_id": 1}).limit(
            limit
        )
        return [d["_id"] async for d in cursor]


def claim_key(insurer: str, claim_id: str) -> str:
    """One key per (insurer, claim id): JSON, so that no two pairs ever share one."""
    return json.dumps([insurer, claim_id], ensure_ascii=False)


def _doc(c: Claim, insurer: str, batch_id: str, now: datetime) -> Document:
    return {
        "_id": claim_key(insurer, c.claim_id),
        "insurer": insurer,
        "claim_id": c.claim_id,
        "ins": c.ins,
        "care_date": c.care_date,
        "kind": c.kind,
        "code": c.code,
        "label": c.label,
        "professional_rpps": c.professional_rpps,
        "batch": batch_id,
        "stored_at": now,
    }


def _claim(d: Document) -> Claim:
    return Claim(
        d["claim_id"],
        d["ins"],
        d["care_date"],
        d["kind"],
        d["code"],
        d["label"],
        d["professional_rpps"],
    )
