"""MongoDB access: one AsyncMongoClient per process, per-service index bootstrap, the store base."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

Document = dict[str, Any]

_client: AsyncMongoClient[Document] | None = None


def mongo_client(url: str, timeout_ms: int) -> AsyncMongoClient[Document]:
    """The process's one client (it pools connections itself)."""
    global _client
    if _client is None:
        _client = AsyncMongoClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms * 2,
            appname="dmp",
        )
    return _client


async def close_mongo() -> None:
    global _client
    if _client is not None:
        await _client.close()
        _client = None


async def ping(db: AsyncDatabase[Document]) -> bool:
    try:
        await db.command("ping")
    except PyMongoError:
        return False
    return True


class Store:
    """Base of every service's store: all database access of a service lives in its subclass."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db

    async def ensure_indexes(self) -> None:
        """Create the indexes this store relies on (idempotent; run at start)."""


async def insert_once(collection: Any, doc: Document) -> bool:
    """Insert keyed by `_id`; False when it was already there (idempotent consumers)."""
    try:
        await collection.insert_one(doc)
    except DuplicateKeyError:
        return False
    return True
