"""All of messaging's database access.

- `conversations`: one document per conversation, its messages inside it, so that a message,
  the unread counts and the events it causes are written in one single-document update (no
  transactions, DESIGN §4). Subjects, bodies and file names are sealed under the patient's key.
- `attachments`: one document per attachment, its content sealed. Written before the message
  that names it; one whose message never landed is named by nothing and shown to nobody, and
  goes with the patient's purge.
- `data_keys`: each patient's content key, sealed under messaging's own key. A purge deletes
  it first: what was sealed under it is unreadable from then on.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cached_property
from typing import Any

from pymongo.errors import DuplicateKeyError

from dmp_kit.crypto import seal, unseal
from dmp_kit.mongo import Document, Store

PAGE_FIELDS = {"messages": 0}


class MessagingStore(Store):
    @cached_property
    def conversations(self) -> Any:
        return self.db["conversations"]

    @cached_property
    def attachments(self) -> Any:
        return self.db["attachments"]

    @cached_property
    def keys(self) -> Any:
        return self.db["data_keys"]

    async def ensure_indexes(self) -> None:
        await self.conversations.create_index([("ins", 1), ("last_message_at", -1), ("_id", -1)])
        await self.conversations.create_index(
            [("counterpart_key", 1), ("last_message_at", -1), ("_id", -1)]
        )
        await self.attachments.create_index("ins")

    # keys ------------------------------------------------------------------------------

    async def data_key(self, ins: str, master: bytes, now: datetime) -> bytes:
        """The patient's content key, made on first use. Not kept in memory: a purge on any
        replica takes effect at once everywhere."""
        found = await self.keys.find_one({"_id": ins})
        if found is None:
            key = os.urandom(32)
            try:
                await self.keys.insert_one(
                    {
                        "_id": ins,
                        "sealed": seal(master, key, ins.encode()),
                        "created_at": now,
                    }
                )
                return key
            except DuplicateKeyError:
                found = await self.keys.find_one({"_id": ins})
        if found is None:  # purged in between: nothing more is written for it
            raise KeyError(ins)
        return unseal(master, bytes(found["sealed"]), ins.encode())

    async def existing_key(self, ins: str, master: bytes) -> bytes | None:
        found = await self.keys.find_one({"_id": ins})
        return None if found is None else unseal(master, bytes(found["sealed"]), ins.encode())

    # conversations ---------------------------------------------------------------------

    async def conversation(self, conversation_id: str) -> Document | None:
        doc: Document | None = await self.conversations.find_one(
            {"_id": conversation_id}, {"outbox": 0, "outbox_pending": 0}
        )
        return doc

    async def page(
        self,
        owner: Document,
        after: tuple[datetime, str] | None,
        size: int,
        *,
        with_messages: bool = False,
    ) -> list[Document]:
        """The caller's conversations, newest first, after a (last_message_at, id) cursor."""
        query: Document = dict(owner)
        if after is not None:
            at, last_id = after
            query["$or"] = [
                {"last_message_at": {"$lt": at}},
                {"last_message_at": at, "_id": {"$lt": last_id}},
            ]
        cursor = (
            self.conversations.find(
                query, {"outbox": 0} if with_messages else PAGE_FIELDS | {"outbox": 0}
            )
            .sort([("last_message_at", -1), ("_id", -1)])
            .limit(size)
        )
        return [doc async for doc in cursor]

    async def unread_total(self, owner: Document, side: str) -> int:
        rows = await (
            await self.conversations.aggregate(
                [
                    {"$match": owner},
                    {"$group": {"_id": None, "n": {"$sum": f"$unread.{side}"}}},
                ]
            )
        ).to_list()
        return int(rows[0]["n"]) if rows else 0

    # attachments -----------------------------------------------------------------------

    async def add_attachment(self, doc: Document) -> None:
        await self.attachments.insert_one(doc)

    async def attachment(self, attachment_id: str) -> Document | None:
        found: Document | None = await self.attachments.find_one({"_id": attachment_id})
        return found

    # purge -----------------------------------------------------------------------------

    async def purge(self, ins: str, purged_at: datetime) -> None:
        """The key first (the content is unreadable from then on), then the rest: what was
        written up to the purge, not what a DMP opened again since holds (a late event)."""
        await self.keys.delete_one({"_id": ins, "created_at": {"$lte": purged_at}})
        await self.attachments.delete_many({"ins": ins, "created_at": {"$lte": purged_at}})
        await self.conversations.delete_many({"ins": ins, "opened_at": {"$lte": purged_at}})
