"""What identity keeps, on its real database: a session's refresh tokens go a week after the
session's absolute end, and not before."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp_identity.store import ENDED_SESSIONS_KEPT, IdentityStore
from dmp_stack.testing import Infra

pytestmark = pytest.mark.asyncio(loop_scope="session")
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[IdentityStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    name = f"identity_retention_{secrets.token_hex(4)}"
    store = IdentityStore(client[name])
    await store.ensure_indexes()
    yield store
    await client.drop_database(name)
    await client.close()


def refresh(name: str, session_end: datetime | None, expires: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "_id": name,
        "family": f"family-{name}",
        "account_id": "patient:1",
        "status": "used",
        "expires_at": expires,
    }
    if session_end is not None:
        row["session_expires_at"] = session_end
    return row


async def test_a_sessions_refresh_tokens_go_a_week_after_it_ended(store: IdentityStore) -> None:
    long_ago = NOW - ENDED_SESSIONS_KEPT - timedelta(hours=1)
    lately = NOW - ENDED_SESSIONS_KEPT + timedelta(hours=1)
    rows = [
        refresh("ended-long-ago", long_ago, long_ago),
        refresh("ended-lately", lately, lately),
        # expired itself long ago, but its session (rotated since) still lives: kept, so a
        # replay of it revokes the session's family
        refresh("rotated-in-a-live-session", NOW + timedelta(days=20), long_ago),
        refresh("legacy-expired-long-ago", None, long_ago),
        refresh("legacy-expired-lately", None, lately),
    ]
    await store.refresh_tokens.insert_many(rows)
    await store.purge_expired(NOW)
    kept = {row["_id"] async for row in store.refresh_tokens.find({}, {"_id": 1})}
    assert kept == {"ended-lately", "rotated-in-a-live-session", "legacy-expired-lately"}
