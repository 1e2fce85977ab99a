"""All of notify's database access."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dmp_kit.mongo import Document, Store, insert_once


class NotifyStore(Store):
    @property
    def deliveries(self) -> Any:
        return self.db["deliveries"]

    @property
    def dev_outbox(self) -> Any:
        return self.db["dev_outbox"]

    async def ensure_indexes(self) -> None:
        await self.dev_outbox.create_index("destination")

    async def claim_delivery(self, key: str, channel: str, now: datetime) -> bool:
        """False when this delivery was already made (a retried call sends nothing twice)."""
        return await insert_once(
            self.deliveries, {"_id": key, "channel": channel, "created_at": now}
        )

    async def release_delivery(self, key: str) -> None:
        await self.deliveries.delete_one({"_id": key})

    async def record_dev_message(self, doc: Document) -> None:
        await self.dev_outbox.insert_one(doc)

    async def dev_messages(self, destination: str) -> list[Document]:
        cursor = self.dev_outbox.find({"destination": destination}).sort("sent_at", -1).limit(50)
        return [doc async for doc in cursor]
