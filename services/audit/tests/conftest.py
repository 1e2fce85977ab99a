"""Audit's tests share one fixture: a database of the test's own on the session's server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp_audit.store import AuditStore
from dmp_stack.testing import Infra


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[AuditStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo.url)
    name = f"audit_test_{uuid.uuid4().hex[:10]}"
    yield AuditStore(client[name])
    await client.drop_database(name)
    await client.close()
