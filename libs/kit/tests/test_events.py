"""Event ids: new ones are UUIDv7; a derived one is the same wherever it is made."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from dmp.events.v1 import dossier_pb2
from dmp_kit.clock import SystemClock
from dmp_kit.events import derived_event_id, new_event


def test_a_derived_id_is_a_uuid7_of_its_time_and_the_same_for_the_same_key() -> None:
    at = datetime(2036, 5, 17, 8, 30, tzinfo=UTC)
    one = derived_event_id(at, "dossier.purged:123:closed_10_years")
    assert one == derived_event_id(at, "dossier.purged:123:closed_10_years")
    assert one == derived_event_id(at.replace(tzinfo=None), "dossier.purged:123:closed_10_years")
    assert one != derived_event_id(at, "dossier.purged:124:closed_10_years")
    assert one != derived_event_id(
        at + timedelta(milliseconds=1), "dossier.purged:123:closed_10_years"
    )
    parsed = uuid.UUID(one)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert (parsed.int >> 80) == int(at.timestamp() * 1000)


def test_an_event_takes_the_id_it_is_given_else_a_new_uuid7() -> None:
    payload = dossier_pb2.DossierPurged(cause="deletion_request")
    given = derived_event_id(datetime.now(UTC), "k")
    made = new_event(
        "dossier.purged", payload, source="dossier", clock=SystemClock(), event_id=given
    )
    assert made.id == given
    fresh = [
        new_event("dossier.purged", payload, source="dossier", clock=SystemClock()).id
        for _ in range(2)
    ]
    assert fresh[0] != fresh[1] and all(uuid.UUID(i).version == 7 for i in fresh)
