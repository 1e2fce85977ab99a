"""All of notify's database access.

Inbox entries and deliveries name the dossier they are about (`ins`), so that a purge erases
them. A patient's record in `preferences` (`_id` = "patient:<INS>") keeps, beside the channels
they chose, when their dossier was last purged (`purged_at`), so that no event older than the
purge brings anything back: an event about a dossier is checked and its patient's channels
read in one lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from dmp_kit.mongo import Document, Inserts, SharedReads, Store, insert_once, upsert
from dmp_notify.domain import Message, sms_text

# How long a write waits for others to go with it after the last one came, and after the
# first at most (kit's Inserts). An inbox entry is what a patient sees first: it waits little.
# The records follow e-mails, each once its SMTP exchange ends, spread out: they wait longer,
# which holds up only their event's acknowledgement (the consumer handles the next batch).
INBOX_WINDOW, INBOX_LONGEST = 0.002, 0.01
RECORDS_WINDOW, RECORDS_LONGEST = 0.01, 0.05


@dataclass(frozen=True)
class RecipientState:
    channels: dict[str, list[str]]
    purged_at: datetime | None  # a patient's dossier's last purge


class NotifyStore(Store):
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        # A batch of events is handled at once (deliver.py): the inbox entries, delivery
        # records and dev copies its notices write go as one command of each kind (the
        # records each after its own e-mail).
        self._inbox = Inserts(self.notifications, window=INBOX_WINDOW, longest=INBOX_LONGEST)
        self._deliveries = Inserts(self.deliveries, window=RECORDS_WINDOW, longest=RECORDS_LONGEST)
        self._dev_copies = Inserts(self.dev_outbox, window=RECORDS_WINDOW, longest=RECORDS_LONGEST)
        # and the events of a batch about one patient read their record once
        self._states = SharedReads(self._read_state)

    async def settle(self) -> None:
        for inserts in (self._inbox, self._deliveries, self._dev_copies):
            await inserts.settle()

    @cached_property
    def deliveries(self) -> Any:
        return self.db["deliveries"]

    @cached_property
    def dev_outbox(self) -> Any:
        return self.db["dev_outbox"]

    async def ensure_indexes(self) -> None:
        await self.dev_outbox.create_index("destination")
        await self.notifications.create_index([("recipient", 1), ("_id", -1)])
        await self.notifications.create_index("ins", sparse=True)
        await self.deliveries.create_index("ins", sparse=True)
        await self.deliveries.create_index("created_at")
        await self.fold_purges()

    async def claim_delivery(self, key: str, channel: str, now: datetime) -> bool:
        """False when this delivery was already made (a retried call sends nothing twice)."""
        return await insert_once(
            self.deliveries, {"_id": key, "channel": channel, "created_at": now}
        )

    async def was_delivered(self, key: str) -> bool:
        """Whether a notification's delivery was recorded as made. A claim left `sending` by
        an earlier version that died mid-send is not: it is sent again rather than lost."""
        doc = await self.deliveries.find_one({"_id": key}, {"state": 1})
        return doc is not None and doc.get("state") != "sending"

    async def delivered(self, key: str, channel: str, now: datetime, ins: str) -> None:
        """Records a notification's delivery, once it was made."""
        doc = {"_id": key, "channel": channel, "created_at": now, "state": "sent", "ins": ins}
        if not await self._deliveries.insert_once(doc):
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
        await self._dev_copies.insert_once(
            {
                "_id": ObjectId(),
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

    @cached_property
    def notifications(self) -> Any:
        return self.db["notifications"]

    @cached_property
    def preferences(self) -> Any:
        return self.db["preferences"]

    async def add_notification(self, doc: Document) -> bool:
        """Keyed by event and recipient: a redelivered event adds nothing."""
        return await self._inbox.insert_once(doc)

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
        """The channels `recipient` chose, read now: someone reading back the choice they
        just made gets it, never a read begun before."""
        return (await self._read_state(recipient)).channels

    async def recipient_state(self, recipient: str) -> RecipientState:
        """The channels `recipient` chose and, for a patient, when their dossier was last
        purged: one lookup, shared by the events handled at the same time (SharedReads)."""
        return await self._states.get(recipient)

    async def _read_state(self, recipient: str) -> RecipientState:
        doc = await self.preferences.find_one({"_id": recipient})
        if doc is None:
            return RecipientState({}, None)
        return RecipientState(dict(doc.get("channels") or {}), doc.get("purged_at"))

    async def put_preferences(self, recipient: str, channels: dict[str, list[str]]) -> None:
        """The channels `recipient` chose, in place of those before; the record's other fields
        (a purge's time) kept. Written whole: FerretDB 1.24 takes a `$set` of an embedded
        document holding the same values under other keys for no change, and keeps the old."""

        async def write() -> None:
            doc = await self.preferences.find_one({"_id": recipient}) or {"_id": recipient}
            await self.preferences.replace_one(
                {"_id": recipient}, {**doc, "channels": channels}, upsert=True
            )

        async with self.locks.hold(self.preferences.name, recipient):
            await upsert(write)

    async def _note_purge(self, recipient: str, at: datetime) -> None:
        """A dossier's purge time in its patient's record, under the record's lock: FerretDB
        writes a whole document back for an update, so a purge and a choice of channels written
        at the same moment would otherwise lose one of the two (kit's DocumentLocks)."""
        async with self.locks.hold(self.preferences.name, recipient):
            await upsert(
                lambda: self.preferences.update_one(
                    {"_id": recipient}, {"$max": {"purged_at": at}}, upsert=True
                )
            )

    # purges (rule 13) -------------------------------------------------------------------

    async def forget_dossier(self, ins: str, at: datetime) -> None:
        """The purged dossier's patient's inbox, and every notification and delivery about
        it; idempotent. The purge's time is noted first, so nothing older comes back."""
        await self._note_purge(f"patient:{ins}", at)
        await self.notifications.delete_many({"recipient": f"patient:{ins}"})
        await self.notifications.delete_many({"ins": ins})
        await self.deliveries.delete_many({"ins": ins})

    async def fold_purges(self) -> int:
        """Moves the purge times an earlier version kept apart (`purges`, one per INS) into the
        patients' preference records, once, at start; how many. Idempotent ($max), so replicas
        starting together agree; each is removed only once it is folded."""
        folded = 0
        async for doc in self.db["purges"].find({}):
            await self._note_purge(f"patient:{doc['_id']}", doc["at"])
            await self.db["purges"].delete_one({"_id": doc["_id"], "at": doc["at"]})
            folded += 1
        return folded

    # dead letters ----------------------------------------------------------------------

    @cached_property
    def dead_letters(self) -> Any:
        return self.db["dead_letters"]

    async def dead_letter(self, doc: Document) -> None:
        await self.dead_letters.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def list_dead_letters(self, before: str | None, limit: int) -> list[Document]:
        query: Document = {"_id": {"$lt": before}} if before else {}
        return [d async for d in self.dead_letters.find(query).sort("_id", -1).limit(limit)]
