"""Delivery records on notify's real database: kept while a redelivery could still come, then
forgotten; a pass on a second replica changes nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from dmp_kit.clock import ManualClock
from dmp_notify.config import NotifySettings
from dmp_notify.retention import DeliveryRetention
from dmp_notify.store import NotifyStore
from dmp_stack.testing import Infra, make_ins

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[NotifyStore]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    await client.drop_database("notify_retention_test")
    store = NotifyStore(client["notify_retention_test"])
    await store.ensure_indexes()
    yield store
    await client.drop_database("notify_retention_test")
    await client.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_delivery_records_are_forgotten_after_the_retention_period(
    store: NotifyStore,
) -> None:
    ins = make_ins()
    old, recent = T0, T0 + timedelta(days=25)
    await store.delivered("evt-old:email", "email", old, ins)
    assert await store.claim_delivery("otp-old", "sms", old)
    await store.delivered("evt-new:email", "email", recent, ins)

    clock = ManualClock(T0 + timedelta(days=31))
    retention = DeliveryRetention(store, clock, days=30, interval=3600)
    assert await retention.once() == 2
    left = {doc["_id"] async for doc in store.deliveries.find({})}
    assert left == {"evt-new:email"}
    # still within the period: the same event delivered again sends nothing
    assert await store.was_delivered("evt-new:email")
    assert not await store.was_delivered("evt-old:email")
    # another replica's pass at the same time finds nothing more to delete
    assert await DeliveryRetention(store, clock, days=30, interval=3600).once() == 0


def test_the_retention_period_cannot_be_shorter_than_a_redelivery() -> None:
    with pytest.raises(ValidationError, match="delivery_retention_days"):
        NotifySettings(delivery_retention_days=0.01)
