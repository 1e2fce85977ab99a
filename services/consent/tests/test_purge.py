"""A purge on consent's real database: the record forgets everything that grants anything, and
no event older than the purge brings any of it back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from dmp_consent.domain import DossierStatus
from dmp_consent.store import ConsentStore, consent_state, dossier_state
from dmp_stack.testing import Infra, make_ins

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[ConsentStore]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    yield ConsentStore(client["consent_purge_test"])
    await client.close()


async def test_a_purge_leaves_a_record_that_grants_nothing(store: ConsentStore) -> None:
    ins, parent = make_ins(), make_ins()
    await store.record_dossier_status(ins, DossierStatus.OPEN, T0, [parent])
    granted = {
        "attending_physician": {"rpps": "10000000006"},
        "authorized": [{"rpps": "10000000014"}],
        "blocked": [{"rpps": "10000000022"}],
        "grants": [{"rpps": "10000000030", "mode": "break_glass", "expires_at": T0}],
        "settings": {"allow_emergency_access": False, "allow_regulator_access": False},
    }
    await store.change(ins, lambda doc: granted)
    before = consent_state(await store.get(ins))
    assert before.attending_physician and before.blocked and before.grants

    purged = T0 + timedelta(days=400)
    await store.record_dossier_status(ins, DossierStatus.ABSENT, purged, [])
    for late in (DossierStatus.OPEN, DossierStatus.CLOSED):  # older events, delivered late
        await store.record_dossier_status(ins, late, purged - timedelta(seconds=1), [parent])
    doc = await store.get(ins)
    assert consent_state(doc) == consent_state(None), "as a DMP never opened"
    assert dossier_state(ins, doc).status is DossierStatus.ABSENT
    assert not dossier_state(ins, doc).legal_representatives

    # a DMP opened again: dossier answers before its event comes, then the event applies
    await store.adopt_dossier_status(ins, DossierStatus.OPEN, [parent])
    assert dossier_state(ins, await store.get(ins)).status is DossierStatus.OPEN
    await store.record_dossier_status(ins, DossierStatus.OPEN, purged + timedelta(days=1), [parent])
    doc = await store.get(ins)
    assert dossier_state(ins, doc).legal_representatives == {parent}
    assert consent_state(doc) == consent_state(None)
