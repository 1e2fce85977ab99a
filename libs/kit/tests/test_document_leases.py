"""Writes to one record from two processes, on the real database: each process's lock orders
its own writes; shared, a lease in the database orders both's (DMP_DOCUMENT_LEASES), which
FerretDB needs since its compare-and-set is not atomic between clients."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp_kit.errors import Unavailable
from dmp_kit.mongo import LEASE_SECONDS, LEASE_WAIT_SECONDS, DocumentLocks, lease
from dmp_stack.testing import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def database(infra: Infra) -> AsyncIterator[str]:
    name = f"kit_leases_{secrets.token_hex(4)}"
    yield name
    async with AsyncMongoClient(infra.mongo.url) as client:
        await client.drop_database(name)


@pytest.fixture
async def leases(infra: Infra, database: str) -> AsyncIterator[Any]:
    """The leases collection every process shares, through a client of the test's own."""
    async with AsyncMongoClient(infra.mongo.url) as client:
        yield client[database]["leases"]


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
    leases: Any,
) -> None:
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
    leases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dmp_kit.mongo.LEASE_WAIT_SECONDS", 0.2)
    await leases.insert_one({"_id": "held", "token": "z", "until": time.time() + 60})
    with pytest.raises(Unavailable):
        async with lease(leases, "held"):
            pass


# A process that takes the lease "record" and holds it until it is killed.
HOLDER = """
import asyncio, sys
from pymongo import AsyncMongoClient
from dmp_kit.mongo import lease

async def main():
    async with AsyncMongoClient(sys.argv[1]) as client:
        async with lease(client[sys.argv[2]]["leases"], "record"):
            print("held", flush=True)
            await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_lease_whose_holder_is_killed_is_taken_over_once_it_lapses(
    infra: Infra, database: str, leases: Any
) -> None:
    """kill -9 of a replica in the middle of a write: the others write the record again within
    LEASE_SECONDS (a request waits LEASE_WAIT_SECONDS at most), not after the longest hold."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        infra.mongo.url,
        database,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"held"
        # Still held while the holder lives, also past its first term: it renews it.
        await asyncio.sleep(LEASE_SECONDS * 1.5)
        held = await leases.find_one({"_id": "record"})
        assert held is not None and held["until"] > time.time()
        os.killpg(holder.pid, signal.SIGKILL)
        await holder.wait()
        killed = time.monotonic()
        async with lease(leases, "record"):
            waited = time.monotonic() - killed
        assert waited <= LEASE_SECONDS + 1.0 < LEASE_WAIT_SECONDS, waited
        assert await leases.count_documents({}) == 0
    finally:
        if holder.returncode is None:
            os.killpg(holder.pid, signal.SIGKILL)
            await holder.wait()


async def test_a_hold_longer_than_a_lease_keeps_it(
    leases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dmp_kit.mongo.LEASE_SECONDS", 0.6)
    order: list[str] = []

    async def first() -> None:
        async with lease(leases, "long"):
            order.append("first took")
            await asyncio.sleep(1.5)  # two and a half terms: renewed meanwhile
            order.append("first gave back")

    async def second() -> None:
        await asyncio.sleep(0.1)
        async with lease(leases, "long"):
            order.append("second took")

    await asyncio.gather(first(), second())
    assert order == ["first took", "first gave back", "second took"]


class AnsweredTooLate:
    """The leases collection as a request cancelled at the wrong moment sees it: its insert
    lands in the database, and the request is cancelled before it reads the answer."""

    def __init__(self, leases: Any) -> None:
        self.leases = leases

    async def insert_one(self, doc: dict[str, Any]) -> None:
        await self.leases.insert_one(doc)
        raise asyncio.CancelledError

    def __getattr__(self, name: str) -> Any:
        return getattr(self.leases, name)


async def test_a_request_cancelled_while_taking_a_lease_leaves_none(leases: Any) -> None:
    with pytest.raises(asyncio.CancelledError):
        async with lease(AnsweredTooLate(leases), "cancelled"):
            pass
    assert await leases.count_documents({"_id": "cancelled"}) == 0
    started = time.monotonic()
    async with lease(leases, "cancelled"):
        assert time.monotonic() - started < 1.0


async def test_a_lease_lost_while_held_is_logged_without_the_records_id(
    leases: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A holder stalled past its lease (or whose clock stepped) finds it taken by another at
    its next renewal: the log says so, naming the collection only."""
    monkeypatch.setattr("dmp_kit.mongo.LEASE_SECONDS", 0.6)
    key = "listings/'180057512345623:07'"
    async with lease(leases, key):
        # Another replica took it over, as if it had lapsed.
        await leases.replace_one({"_id": key}, {"_id": key, "token": "another", "until": 0.0})
        out, deadline = "", time.monotonic() + 5.0
        while "document_lease_lost" not in out and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # renewals every 0.2 s
            out += capsys.readouterr().out
        await asyncio.sleep(0.5)  # two renewals more: none tries again, none logs again
        assert (await leases.find_one({"_id": key}))["token"] == "another"
    out += capsys.readouterr().out
    assert out.count("document_lease_lost") == 1 and "listings" in out
    assert "180057512345623" not in out
    assert (await leases.find_one({"_id": key}))["token"] == "another"  # theirs, kept
