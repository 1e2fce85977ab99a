"""The dossier's copy of a minor's legal representatives, on the real database: the end of the
representation at majority (identity.representation.ended) removes those it names, once,
whatever the order, and touches nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp.events.v1 import identity_pb2
from dmp_dossier.events import on_representation_ended
from dmp_dossier.store import DossierStore
from dmp_kit.clock import ManualClock
from dmp_kit.events import new_event
from dmp_stack.testing import Infra, make_ins

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[DossierStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    db = client[f"dossier_representation_{make_ins()}"]
    yield DossierStore(db)
    await client.drop_database(db.name)
    await client.close()


def ended(ins: str, representatives: list[str]) -> Any:
    return new_event(
        "identity.representation.ended",
        identity_pb2.RepresentationEnded(
            legal_representatives=representatives, majority_date="2026-03-01"
        ),
        source="identity",
        clock=ManualClock(datetime(2026, 3, 1, tzinfo=UTC)),
        patient_ins=ins,
    )


async def test_the_end_removes_the_representatives_it_names(store: DossierStore) -> None:
    ins, mother, father = make_ins(), make_ins(), make_ins()
    await on_representation_ended(store, ended(ins, [mother]))  # no dossier: nothing is made
    assert await store.get_dossier(ins) is None

    await store.insert_dossier(
        {"_id": ins, "status": "open", "legal_representatives": [mother, father]}
    )
    event = ended(ins, [mother, father])
    await on_representation_ended(store, event)
    await on_representation_ended(store, event)  # redelivered: the same
    dossier = await store.get_dossier(ins)
    assert dossier is not None
    assert dossier["legal_representatives"] == [] and dossier["status"] == "open"

    other = make_ins()
    await store.insert_dossier({"_id": other, "status": "open", "legal_representatives": [mother]})
    await on_representation_ended(store, ended(other, [father]))  # names another: none of theirs
    kept = await store.get_dossier(other)
    assert kept is not None and kept["legal_representatives"] == [mother]
