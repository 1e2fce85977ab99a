"""Upgrading past listings: documents stored one record each (as before listings), with events
still waiting in their outbox, are folded into their dossier's listings when the dossier service
starts; they are listed as any other, their events are published, and the old collection is
left empty."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from pymongo import MongoClient
from uuid6 import uuid7

from dmp.events.v1 import dossier_pb2 as ev
from dmp_dossier.events import DossierEvents
from dmp_dossier.store import listing_entries
from dmp_kit.clock import SystemClock
from dmp_kit.outbox import new_document_with_events
from dmp_stack.testing import RunningStack, collect_events


async def test_documents_stored_one_record_each_are_listed_after_a_restart(
    stack: RunningStack,
) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    gp = stack.create_professional(admin, "10")
    ins = patient["ins"]
    pt = stack.login("patient", ins, patient["password"], patient["email"])["access_token"]
    stack.open_dossier(pt, patient)
    token = stack.login("professional", gp["rpps"], gp["password"], gp["email"])["access_token"]
    document = {"type_code": "11488-4", "title": "CR listé", "mime_type": "text/plain"}
    with stack.client(token) as c:
        content = base64.b64encode(b"compte rendu").decode()
        r = c.post(f"/v1/dossiers/{ins}/documents", json={**document, "content_base64": content})
        assert r.status_code == 201, r.text
        listed_first = r.json()["id"]

    events = DossierEvents(SystemClock())
    with MongoClient(stack.infra.mongo.url, tz_aware=True) as client:
        db = client["dossier"]
        model = next(
            d
            for listing in db["dossiers"].find({"ins": ins})
            for d in listing_entries(listing)
            if d["_id"] == listed_first
        )
        legacy: dict[str, Any] = {}
        for n in range(2):
            doc_id = str(uuid7())
            added = events.fact(
                "document.added",
                ev.DocumentAdded(document_id=doc_id, type_code="11488-4", author=gp["rpps"]),
                None,
                ins,
            )
            legacy[doc_id] = added.id
            old = {k: v for k, v in model.items() if k != "listing"}
            db["documents"].insert_one(
                new_document_with_events(
                    {
                        **old,
                        "_id": doc_id,
                        "title": f"CR d'avant {n}",
                        "created_at": model["created_at"] - timedelta(days=n + 1),
                    },
                    added,
                )
            )

        stack.stack.restart("dossier")

        assert db["documents"].count_documents({}) == 0, "the old collection is emptied"
    with stack.client(token) as c:
        items = c.get(f"/v1/dossiers/{ins}/documents").json()["items"]
    assert [d["id"] for d in items] == [listed_first, *legacy], "listed, newest first"
    assert [d["title"] for d in items[1:]] == ["CR d'avant 0", "CR d'avant 1"]
    published = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "document.added",
        lambda seen: set(legacy.values()) <= {e.id for e in seen},
        wait=30,
    )
    assert set(legacy.values()) <= {e.id for e in published}, "their waiting events published"
