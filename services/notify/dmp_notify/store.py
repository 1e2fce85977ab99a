"""All of notify's database access.

Inbox entries and deliveries name the dossier they are about (`ins`), so that a purge erases
them; `purges` keeps, per INS, only when its dossier was last purged, so that no event older
than the purge brings anything back.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from dmp_kit.mongo import Document, Store, insert_once
from dmp_notify.domain import Message, sms_text


class NotifyStore(Store):
    @property
    def deliveries(self) -> Any:
        return self.db["deliveries"]

    @property
    def dev_outbox(self) -> Any:
        return self.db["dev_outbox"]

    @property
    def purges(self) -> Any:
        return self.db["purges"]

    async def ensure_indexes(self) -> None:
        await self.dev_outbox.create_index("destination")
        await self.notifications.create_index([("recipient", 1), ("_id", -1)])
        await self.notifications.create_index("ins", sparse=True)
        await self.deliveries.create_index("ins", sparse=True)
        await self.deliveries.create_index("created_at")

    async def claim_delivery(self, key: str, channel: str, now: datetime) -> bool:
        """False when this delivery was already made (a retried call sends nothing twice)."""
        return await insert_once(
            self.deliveries, {"_id": key, "channel": channel, "created_at": now}
        )

    async def claim_event_delivery(
        self, key: str, channel: str, now: datetime, stale: float, ins: str
    ) -> bool:
        """Claim a notification's delivery: True to send it now. A claim still `sending` after
        `stale` seconds belongs to a process that died mid-send: it is taken over (sent again
        rather than lost)."""
        doc = {
            "_id": key,
            "channel": channel,
            "created_at": now,
            "state": "sending",
            "at": now,
            "ins": ins,
        }
        if await insert_once(self.deliveries, doc):
            return True
        taken = await self.deliveries.update_one(
            {"_id": key, "state": "sending", "at": {"$lt": now - timedelta(seconds=stale)}},
            {"$set": {"at": now}},
        )
        return bool(taken.modified_count)

    async def delivered(self, key: str) -> None:
        await self.deliveries.update_one({"_id": key}, {"$set": {"state": "sent"}})

    async def release_delivery(self, key: str) -> None:
        await self.deliveries.delete_one({"_id": key})

    async def forget_deliveries(self, before: datetime) -> int:
        """Deletes the delivery records made before `before` (retention.py); how many."""
        gone = await self.deliveries.delete_many({"created_at": {"$lt": before}})
        return int(gone.deleted_count)

    async def record_dev_message(
        self, destination: str, channel: str, message: Message, now: datetime
    ) -> None:
        """A copy of a message sent, for /dev/outbox (dev mode only): an SMS as it was sent."""
        await self.dev_outbox.insert_one(
            {
                "destination": destination,
                "channel": channel,
                "subject": message.subject,
                "body": message.body if channel == "email" else sms_text(message),
                "sent_at": now,
            }
        )

    async def dev_messages(self, destination: str) -> list[Document]:
        cursor = self.dev_outbox.find({"destination": destination}).sort("sent_at", -1).limit(50)
        return [doc async for doc in cursor]

    # the inbox, preferences and the delivery log (rule 11) ---------------------------

    @property
    def notifications(self) -> Any:
        return self.db["notifications"]

    @property
    def preferences(self) -> Any:
        return self.db["preferences"]

    async def add_notification(self, doc: Document) -> bool:
        """Keyed by event and recipient: a redelivered event adds nothing."""
        return await insert_once(self.notifications, doc)

    async def inbox(
        self, recipient: str, unread_only: bool, before: str | None, limit: int
    ) -> list[Document]:
        query: Document = {"recipient": recipient}
        if unread_only:
            query["read"] = False
        if before:
            query["_id"] = {"$lt": before}
        cursor = self.notifications.find(query).sort("_id", -1).limit(limit)
        return [doc async for doc in cursor]

    async def mark_read(self, recipient: str, notification_id: str, read: bool) -> Document | None:
        await self.notifications.update_one(
            {"_id": notification_id, "recipient": recipient}, {"$set": {"read": read}}
        )
        doc: Document | None = await self.notifications.find_one(
            {"_id": notification_id, "recipient": recipient}
        )
        return doc

    async def get_preferences(self, recipient: str) -> dict[str, list[str]]:
        doc = await self.preferences.find_one({"_id": recipient})
        return dict(doc["channels"]) if doc else {}

    async def put_preferences(self, recipient: str, channels: dict[str, list[str]]) -> None:
        await self.preferences.replace_one(
            {"_id": recipient}, {"_id": recipient, "channels": channels}, upsert=True
        )

    # purges (rule 13) -------------------------------------------------------------------

    async def forget_dossier(self, ins: str, at: datetime) -> None:
        """The purged dossier's patient's inbox, and every notification and delivery about
        it; idempotent. The purge's time is noted first, so nothing older comes back."""
        await self.purges.update_one({"_id": ins}, {"$max": {"at": at}}, upsert=True)
        await self.notifications.delete_many({"recipient": f"patient:{ins}"})
        await self.notifications.delete_many({"ins": ins})
        await self.deliveries.delete_many({"ins": ins})

    async def purged_at(self, ins: str) -> datetime | None:
        doc = await self.purges.find_one({"_id": ins})
        return None if doc is None else doc["at"]

    # dead letters ----------------------------------------------------------------------

    @property
    def dead_letters(self) -> Any:
        return self.db["dead_letters"]

    async def dead_letter(self, doc: Document) -> None:
        await self.dead_letters.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def list_dead_letters(self, before: str | None, limit: int) -> list[Document]:
        query: Document = {"_id": {"$lt": before}} if before else {}
        return [d async for d in self.dead_letters.find(query).sort("_id", -1).limit(limit)]
