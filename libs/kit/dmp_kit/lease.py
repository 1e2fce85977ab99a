"""A lease in MongoDB: at most one process at a time holds a named role.

The lease is one document, `{_id: name, holder, until, epoch}`. Taking it succeeds when it is
free (absent, or its `until` has passed) or already ours; renewing moves `until`; each change
of holder increments `epoch`. Both are one conditional update (no transactions, DESIGN §4);
a process that loses the race gets a duplicate-key error from the upsert and holds nothing.

What the lease gives is liveness — one writer at a time, another taking over when the holder
stops renewing. Safety must not rest on clocks: the holder stops acting `margin` before its
lease could lapse, by its own monotonic clock, and whatever it writes must still be refused
when stale (the audit log's chunk positions are unique: a stale writer's chunk collides).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError


def instance_name() -> str:
    """This process, recognisably: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(
        self, collection: Any, name: str, seconds: float, holder: str | None = None
    ) -> None:
        if seconds <= 0:
            raise ValueError("a lease lasts more than 0 seconds")
        self.collection = collection
        self.name = name
        self.seconds = seconds
        self.holder = holder or instance_name()
        self.epoch = 0
        self._valid_until = 0.0  # monotonic

    @property
    def margin(self) -> float:
        return self.seconds / 3

    @property
    def held(self) -> bool:
        """Ours, with at least `margin` to spare, as far as this process's clock can tell."""
        return time.monotonic() < self._valid_until

    async def hold(self) -> bool:
        """Take the lease or renew it; False when another process holds it."""
        asked = time.monotonic()
        now = datetime.now(UTC)
        until = now + timedelta(seconds=self.seconds)
        renewed = await self.collection.find_one_and_update(
            {"_id": self.name, "holder": self.holder},
            {"$set": {"until": until}},
            return_document=ReturnDocument.AFTER,
        )
        if renewed is None:
            try:  # free (absent or lapsed): ours, one holder later
                renewed = await self.collection.find_one_and_update(
                    {"_id": self.name, "until": {"$lt": now}},
                    {"$set": {"holder": self.holder, "until": until}, "$inc": {"epoch": 1}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                renewed = None
        if renewed is None or renewed.get("holder") != self.holder:
            self._valid_until = 0.0
            return False
        self.epoch = int(renewed.get("epoch", 1))
        self._valid_until = asked + self.seconds - self.margin
        return True

    async def release(self) -> None:
        """Give the lease up at once (a clean stop): another process need not wait it out."""
        self._valid_until = 0.0
        await self.collection.delete_one({"_id": self.name, "holder": self.holder})
