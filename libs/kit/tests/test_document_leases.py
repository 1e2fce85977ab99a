"""Writes to one record from two processes, on the real database: each process's lock orders
its own writes; shared, a lease in the database orders both's (DMP_DOCUMENT_LEASES), which
FerretDB needs since its compare-and-set is not atomic between clients."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp_kit.errors import Unavailable
from dmp_kit.mongo import LEASE_SECONDS, DocumentLocks, lease
from dmp_stack.testing import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def database(infra: Infra) -> AsyncIterator[str]:
    name = f"kit_leases_{secrets.token_hex(4)}"
    yield name
    async with AsyncMongoClient(infra.mongo.url) as client:
        await client.drop_database(name)


async def appends(url: str, database: str, tag: str, count: int) -> None:
    """One process: its own client and its own locks, sharing the leases collection; appends
    `count` items to the record, each a read then a write guarded by the version read."""
    async with AsyncMongoClient(url) as client:
        db = client[database]
        locks = DocumentLocks()
        locks.share(db["leases"])
        for i in range(count):
            while True:
                async with locks.hold("records", "one"):
                    current = await db["records"].find_one({"_id": "one"})
                    assert current is not None
                    written = await db["records"].update_one(
                        {"_id": "one", "_v": current["_v"]},
                        {"$set": {"items": [*current["items"], f"{tag}{i}"]}, "$inc": {"_v": 1}},
                    )
                if written.modified_count == 1:
                    break


async def test_two_processes_changing_one_record_lose_nothing(infra: Infra, database: str) -> None:
    async with AsyncMongoClient(infra.mongo.url) as client:
        await client[database]["records"].insert_one({"_id": "one", "items": [], "_v": 1})
        await asyncio.gather(*(appends(infra.mongo.url, database, t, 60) for t in "ab"))
        record = await client[database]["records"].find_one({"_id": "one"})
        assert record is not None
        assert len(record["items"]) == len(set(record["items"])) == 120
        assert await client[database]["leases"].count_documents({}) == 0  # all given back


async def test_a_lease_left_by_a_dead_holder_is_taken_over_and_a_live_one_waited_for(
    infra: Infra, database: str
) -> None:
    async with AsyncMongoClient(infra.mongo.url) as client:
        leases: Any = client[database]["leases"]
        await leases.insert_one({"_id": "dead", "token": "x", "until": time.time() - 1})
        async with lease(leases, "dead"):
            held = await leases.find_one({"_id": "dead"})
            assert held is not None and held["token"] != "x"
        live = {"_id": "busy", "token": "y", "until": time.time() + LEASE_SECONDS}
        await leases.insert_one(live)
        started = time.monotonic()

        async def holder_finishes() -> None:
            await asyncio.sleep(0.3)
            await leases.delete_one({"_id": "busy"})

        finishing = asyncio.create_task(holder_finishes())
        async with lease(leases, "busy"):
            assert time.monotonic() - started >= 0.3
        await finishing


async def test_a_lease_held_too_long_refuses_with_unavailable(
    infra: Infra, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dmp_kit.mongo.LEASE_WAIT_SECONDS", 0.2)
    async with AsyncMongoClient(infra.mongo.url) as client:
        leases: Any = client[database]["leases"]
        await leases.insert_one({"_id": "held", "token": "z", "until": time.time() + 60})
        with pytest.raises(Unavailable):
            async with lease(leases, "held"):
                pass
