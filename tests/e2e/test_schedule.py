"""Rules 8 and 13 on the injected clock: 2-week reminder, reveal after a month, purge after
10 years (the patient's key destroyed first) — each exactly once though two replicas of the
dossier service run the schedule side by side (issue 23 §3)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from pymongo import MongoClient

from dmp_stack.testing import RunningStack, collect_events

DAY = 86_400


def until(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


async def test_reminder_reveal_and_purge(clock: RunningStack) -> None:
    with clock.another_replica("dossier"):  # both schedule; each rule must fire once
        await reminder_reveal_and_purge(clock)


async def reminder_reveal_and_purge(clock: RunningStack) -> None:
    stack = clock
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    gp = stack.create_professional(admin, "10")
    ins = patient["ins"]

    def patient_client() -> Any:  # a fresh token for each moment of the (moved) clock
        tokens = stack.login("patient", ins, patient["password"], patient["email"])
        return stack.client(tokens["access_token"])

    with patient_client() as c:
        r = c.post(
            "/v1/dossiers",
            json={"ins": ins, "vitale_serial": patient["vitale_serial"], "patient_consent": True},
        )
        assert r.status_code == 201, r.text
        assert until(
            lambda: c.put(
                f"/v1/dossiers/{ins}/attending-physician", json={"rpps": gp["rpps"]}
            ).status_code
            == 200
        )
    gp_token = stack.login("professional", gp["rpps"], gp["password"], gp["email"])["access_token"]
    with stack.client(gp_token) as c:
        r = c.post(
            f"/v1/dossiers/{ins}/documents",
            json={
                "type_code": "11502-2",
                "title": "Résultats à annoncer",
                "mime_type": "text/plain",
                "content_base64": base64.b64encode(b"resultats").decode(),
                "hidden_from_patient": True,
            },
        )
        assert r.status_code == 201, r.text
        doc_id = r.json()["id"]

    def patient_sees() -> bool:
        with patient_client() as c:
            items = c.get(f"/v1/dossiers/{ins}/documents").json()["items"]
        return any(d["id"] == doc_id for d in items)

    assert not patient_sees()
    stack.set_clock_offset(15 * DAY)
    reminders = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "document.reminder_due",
        lambda seen: any(e.reminder_due.document_id == doc_id for e in seen),
    )
    await asyncio.sleep(1.5)  # a few more scheduler passes: still one reminder
    reminders = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "document.reminder_due",
        lambda seen: any(e.reminder_due.document_id == doc_id for e in seen),
    )
    assert [e.reminder_due.document_id for e in reminders].count(doc_id) == 1
    assert not patient_sees(), "after 2 weeks the patient is told, not shown"

    def inbox_kinds() -> list[str]:
        with patient_client() as c:
            return [n["kind"] for n in c.get("/v1/me/notifications").json()["items"]]

    assert until(lambda: "reminder" in inbox_kinds()), "the reminder reached the inbox"
    assert "document_added" not in inbox_kinds(), "a hidden document is not announced"

    def told() -> list[Any]:
        return [
            m
            for m in stack.mailbox.messages_to(patient["email"])
            if m["Subject"] == "Votre DMP a été mis à jour"
        ]

    assert until(lambda: len(told()) == 1), "and by e-mail, once"
    assert "Résultats" not in told()[0].get_body(("plain",)).get_content()

    stack.set_clock_offset(31 * DAY)
    assert until(patient_sees), "after a month the document becomes visible"
    await asyncio.sleep(1.5)  # both replicas' passes after the reveal: still one
    revealed = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "document.visibility_changed",
        lambda seen: any(e.document_visibility_changed.document_id == doc_id for e in seen),
    )
    assert [e.document_visibility_changed.document_id for e in revealed].count(doc_id) == 1

    with MongoClient(stack.infra.mongo.url) as client:  # its content, beside the record
        assert client["dossier"]["dossiers"].count_documents({"content_of": ins}) == 1
    with patient_client() as c:
        assert c.post(f"/v1/dossiers/{ins}/close").status_code == 200
    stack.set_clock_offset((10 * 366 + 31) * DAY)

    def purged() -> bool:
        with patient_client() as c:
            return c.get(f"/v1/dossiers/{ins}").status_code == 404

    assert until(purged, timeout=30)
    events = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "dossier.purged",
        lambda seen: any(e.patient_ins == ins for e in seen),
    )
    await asyncio.sleep(1.5)  # both replicas' passes after the purge: still one event
    events = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "dossier.purged",
        lambda seen: any(e.patient_ins == ins for e in seen),
    )
    causes = [e.dossier_purged.cause for e in events if e.patient_ins == ins]
    assert causes == ["closed_10_years"]
    with MongoClient(stack.infra.mongo.url) as client:
        db = client["dossier"]
        assert db["data_keys"].find_one({"_id": ins}) is None
        assert db["dossiers"].find_one({"ins": ins}) is None, "the record and its listings"
        assert db["dossiers"].count_documents({"content_of": ins}) == 0, "its content"
        assert db["dossiers"].count_documents({"_id": {"$regex": f"^{ins};"}}) == 0
        assert db["chunks"].count_documents({"doc_id": doc_id}) == 0  # where it was before
