"""The lease on a real MongoDB-compatible server: one holder at a time, taken over when it
lapses, given up at once on release, each change of holder a new epoch."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp_kit.lease import Lease
from dmp_stack.testing import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def leases(infra: Infra) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    name = f"lease_test_{uuid.uuid4().hex[:10]}"
    yield client[name]["lease"]
    await client.drop_database(name)
    await client.close()


async def test_one_holder_at_a_time_and_a_takeover_when_the_lease_lapses(leases: Any) -> None:
    a = Lease(leases, "sequencer", 1.2, holder="a")
    b = Lease(leases, "sequencer", 1.2, holder="b")
    assert await a.hold() and a.held and a.epoch == 1
    assert not await b.hold() and not b.held
    assert await a.hold() and a.epoch == 1  # renewed: the same holder, the same epoch
    assert not await b.hold()
    await asyncio.sleep(1.3)  # a stops renewing
    assert not a.held  # a stopped acting a margin before the lease could lapse
    assert await b.hold() and b.epoch == 2
    assert not await a.hold() and not a.held
    doc = await leases.find_one({"_id": "sequencer"})
    assert doc["holder"] == "b" and doc["epoch"] == 2


async def test_a_released_lease_is_free_at_once_and_racers_get_one_holder(leases: Any) -> None:
    a = Lease(leases, "sequencer", 30, holder="a")
    assert await a.hold()
    await a.release()
    assert not a.held
    racers = [Lease(leases, "sequencer", 30, holder=f"r{i}") for i in range(6)]
    won = await asyncio.gather(*(r.hold() for r in racers))
    assert sum(won) == 1
    winner = racers[won.index(True)]
    assert (await leases.find_one({"_id": "sequencer"}))["holder"] == winner.holder
    with pytest.raises(ValueError):
        Lease(leases, "sequencer", 0)
