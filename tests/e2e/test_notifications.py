"""Rule 11 through the gateway, on the real SMTP sink: what the patient (and the GP) are told,
on which channels, never twice, never with medical content."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp.events.v1 import dossier_pb2 as dossier_events
from dmp_kit.bus import EventBus
from dmp_kit.clock import SystemClock
from dmp_kit.events import new_event
from dmp_stack.testing import RunningStack, collect_events, until

SECRET_TITLE = "Sérologie VIH — résultat"


class Cast:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = self.admin = stack.admin_token()
        self.patient = stack.create_patient(admin)
        self.ins = self.patient["ins"]
        self.email = self.patient["email"]
        self.gp = stack.create_professional(admin, "10")
        self.emergency = stack.create_professional(admin, "10")
        self.tokens = {
            "patient": self.login(self.patient, "patient", "ins"),
            "gp": self.login(self.gp, "professional", "rpps"),
            "emergency": self.login(self.emergency, "professional", "rpps"),
        }

    def login(self, who: dict[str, Any], kind: str, key: str) -> str:
        return str(self.stack.login(kind, who[key], who["password"], who["email"])["access_token"])

    def client(self, who: str) -> Any:
        return self.stack.client(self.tokens[who])

    def inbox(self, who: str) -> list[dict[str, Any]]:
        with self.client(who) as c:
            r = c.get("/v1/me/notifications", params={"page_size": 100})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def kinds(self, who: str) -> list[str]:
        return [n["kind"] for n in self.inbox(who)]

    def mails(self, subject: str) -> list[Any]:
        return [m for m in self.stack.mailbox.messages_to(self.email) if m["Subject"] == subject]

    def add_document(self, title: str) -> str:
        with self.client("gp") as c:
            r = c.post(
                f"/v1/dossiers/{self.ins}/documents",
                json={
                    "type_code": "11502-2",
                    "title": title,
                    "mime_type": "text/plain",
                    "content_base64": base64.b64encode(b"positif").decode(),
                },
            )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@pytest.fixture(scope="module")
def cast(stack: RunningStack) -> Cast:
    cast = Cast(stack)
    with cast.client("patient") as c:
        r = c.post(
            "/v1/dossiers",
            json={
                "ins": cast.ins,
                "vitale_serial": cast.patient["vitale_serial"],
                "patient_consent": True,
            },
        )
        assert r.status_code == 201, r.text
        assert until(
            lambda: c.put(
                f"/v1/dossiers/{cast.ins}/attending-physician", json={"rpps": cast.gp["rpps"]}
            ).status_code
            == 200
        )
    return cast


def test_a_new_document_is_told_by_email_and_inbox_without_its_content(cast: Cast) -> None:
    cast.add_document(SECRET_TITLE)
    assert until(lambda: "document_added" in cast.kinds("patient"))
    assert until(lambda: cast.mails("Un nouveau document dans votre DMP"))
    mail = cast.mails("Un nouveau document dans votre DMP")[-1]
    body = mail.get_body(("plain",)).get_content()
    assert "Dossier Médical Partagé" in body
    for medical in (SECRET_TITLE, "VIH", "11502-2", "positif"):
        assert medical not in body and medical not in str(mail["Subject"])
    # the doctor's first read of the dossier, and the patient's own login, are told too
    with cast.client("gp") as c:
        assert c.get(f"/v1/dossiers/{cast.ins}/documents").status_code == 200
    assert until(lambda: {"access_first", "login"} <= set(cast.kinds("patient"))), cast.kinds(
        "patient"
    )
    assert until(lambda: cast.mails("Connexion à votre DMP"))


def test_the_dev_outbox_lists_every_message_sent_newest_first(cast: Cast) -> None:
    """DESIGN §3: /dev/outbox lists the e-mails and SMS the stack sent, notifications too."""

    def listed() -> list[dict[str, Any]]:
        with cast.stack.client() as c:
            r = c.get("/dev/outbox", params={"to": cast.email})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    before = {m["sent_at"] for m in listed()}
    cast.add_document("Compte rendu")
    assert until(
        lambda: any(
            m["subject"] == "Un nouveau document dans votre DMP" and m["sent_at"] not in before
            for m in listed()
        )
    ), listed()
    items = listed()
    assert {m["subject"] for m in items} >= {
        "Un nouveau document dans votre DMP",
        "Connexion à votre DMP",
        "Votre code de connexion DMP",
    }
    assert all(m["channel"] == "email" and m["to"] == cast.email for m in items)
    assert [m["sent_at"] for m in items] == sorted((m["sent_at"] for m in items), reverse=True)
    assert "Compte rendu" not in str(items)


def test_legal_representatives_are_told_as_the_patient_would_be(
    stack: RunningStack, cast: Cast
) -> None:
    parent = stack.create_patient(cast.admin)
    minor = stack.create_patient(cast.admin, legal_representatives=[parent["ins"]])
    tokens = {
        "parent": cast.login(parent, "patient", "ins"),
        "minor": cast.login(minor, "patient", "ins"),
    }
    stack.open_dossier(tokens["minor"], minor)
    with cast.client("gp") as c:
        for title, hidden in (("Vaccins", False), ("Consultation confidentielle", True)):
            r = c.post(
                f"/v1/dossiers/{minor['ins']}/documents",
                json={
                    "type_code": "11488-4",
                    "title": title,
                    "mime_type": "text/plain",
                    "content_base64": base64.b64encode(title.encode()).decode(),
                    "hidden_from_legal_representatives": hidden,
                },
            )
            assert r.status_code == 201, r.text

    def inbox(who: str) -> list[dict[str, Any]]:
        with stack.client(tokens[who]) as c:
            r = c.get("/v1/me/notifications", params={"page_size": 100})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def added(who: str) -> list[dict[str, Any]]:
        return [n for n in inbox(who) if n["kind"] == "document_added"]

    assert until(lambda: len(added("minor")) == 2), inbox("minor")
    assert until(lambda: len(added("parent")) == 1), inbox("parent")
    time.sleep(1)  # the hidden document's event has been handled too: still one
    [told] = added("parent")
    assert told["title"].startswith("[Représentant légal]")
    assert "représentant légal" in told["body"]
    assert "login" not in {n["kind"] for n in inbox("parent") if n["title"].startswith("[")}
    subject = "[Représentant légal] Un nouveau document dans votre DMP"
    assert until(
        lambda: [m for m in stack.mailbox.messages_to(parent["email"]) if m["Subject"] == subject]
    ), "by e-mail too, per the representative's own preferences"
    for n in inbox("parent"):
        assert "Vaccins" not in str(n) and "confidentielle" not in str(n)


def test_the_reminder_of_a_document_hidden_from_the_representatives_is_theirs(
    clock: RunningStack, cast: Cast
) -> None:
    """Rule 8 for INVISIBLE_REPRESENTANTS_LEGAUX: after 2 weeks the representatives, not the
    minor, are invited to the announcement."""
    stack = clock
    parent = stack.create_patient(cast.admin)
    minor = stack.create_patient(cast.admin, legal_representatives=[parent["ins"]])
    stack.open_dossier(cast.login(minor, "patient", "ins"), minor)
    with cast.client("gp") as c:
        r = c.post(
            f"/v1/dossiers/{minor['ins']}/documents",
            json={
                "type_code": "11488-4",
                "title": "Consultation confidentielle",
                "mime_type": "text/plain",
                "content_base64": base64.b64encode(b"confidentiel").decode(),
                "hidden_from_legal_representatives": True,
            },
        )
        assert r.status_code == 201, r.text
    stack.set_clock_offset(15 * 86_400)

    def kinds(who: dict[str, Any]) -> list[str]:
        with stack.client(cast.login(who, "patient", "ins")) as c:
            r = c.get("/v1/me/notifications", params={"page_size": 100})
        assert r.status_code == 200, r.text
        return [n["kind"] for n in r.json()["items"]]

    assert until(lambda: "reminder" in kinds(parent)), kinds(parent)
    assert "reminder" not in kinds(minor)


def test_preferences_choose_the_channels_and_the_inbox_keeps_everything(cast: Cast) -> None:
    with cast.client("patient") as c:
        r = c.get("/v1/me/notification-preferences")
        assert r.status_code == 200 and r.json()["preferences"]["document_added"] == ["email"]
        r = c.put("/v1/me/notification-preferences", json={"preferences": {"document_added": []}})
        assert r.status_code == 200, r.text
        assert r.json()["preferences"]["document_added"] == []
        assert r.json()["preferences"]["login"] == ["email"]  # the others keep their default
    before = len(cast.mails("Un nouveau document dans votre DMP"))
    added = len([k for k in cast.kinds("patient") if k == "document_added"])
    cast.add_document("Compte rendu de consultation")
    assert until(
        lambda: len([k for k in cast.kinds("patient") if k == "document_added"]) == added + 1
    )
    time.sleep(1.0)  # an e-mail, were one sent, would be there by now
    assert len(cast.mails("Un nouveau document dans votre DMP")) == before
    with cast.client("patient") as c:
        c.put(
            "/v1/me/notification-preferences", json={"preferences": {"document_added": ["email"]}}
        )


async def test_a_redelivered_event_tells_nothing_twice(stack: RunningStack, cast: Cast) -> None:
    # a document of this test's own, told once, so that the test holds in any order
    def told() -> int:
        return len([k for k in cast.kinds("patient") if k == "document_added"])

    added = await asyncio.to_thread(told)
    await asyncio.to_thread(cast.add_document, "Compte rendu envoyé deux fois")
    assert await asyncio.to_thread(until, lambda: told() == added + 1)
    events = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "document.added",
        lambda seen: any(e.patient_ins == cast.ins for e in seen),
    )
    event = next(e for e in events if e.patient_ins == cast.ins)
    inbox_before = await asyncio.to_thread(cast.inbox, "patient")
    mails_before = len(cast.mails("Un nouveau document dans votre DMP"))
    bus = EventBus(stack.infra.nats.url, "notify-test")
    await bus.connect()
    try:  # past JetStream's duplicate window: a new message id, the same event
        await bus.publish(event.type, event.SerializeToString(), msg_id=f"again-{event.id}")
    finally:
        await bus.close()
    await asyncio.sleep(2.0)
    assert len(await asyncio.to_thread(cast.inbox, "patient")) == len(inbox_before)
    assert len(cast.mails("Un nouveau document dans votre DMP")) == mails_before


def test_emergency_access_is_told_to_the_patient_and_the_gp(cast: Cast) -> None:
    with cast.client("emergency") as c:
        r = c.post(
            f"/v1/dossiers/{cast.ins}/emergency-access",
            json={"reason": "Patient inconscient aux urgences", "mode": "break_glass"},
        )
        assert r.status_code in (200, 201), r.text
    assert until(lambda: "emergency_access" in cast.kinds("patient"))
    assert until(lambda: "emergency_access" in cast.kinds("gp"))
    assert until(lambda: cast.mails("Accès en urgence à votre DMP"))
    told = next(n for n in cast.inbox("gp") if n["kind"] == "emergency_access")
    assert cast.ins not in told["body"] and "inconscient" not in told["body"]


def test_the_inbox_is_the_callers_own_and_checks_its_input(cast: Cast) -> None:
    cast.add_document("Compte rendu")  # with the login's notice: at least two to page through
    assert until(lambda: len(cast.inbox("patient")) >= 2)
    first = cast.inbox("patient")[0]
    with cast.client("patient") as c:
        r = c.patch(f"/v1/me/notifications/{first['id']}", json={"read": True})
        assert r.status_code == 200 and r.json()["read"] is True
        unread = c.get("/v1/me/notifications", params={"unread_only": True}).json()["items"]
        assert first["id"] not in {n["id"] for n in unread}
        assert c.patch("/v1/me/notifications/nope:x", json={"read": True}).status_code == 404
        r = c.put("/v1/me/notification-preferences", json={"preferences": {"weather": []}})
        assert r.status_code == 422, r.text
        r = c.put("/v1/me/notification-preferences", json={"preferences": {"login": ["pigeon"]}})
        assert r.status_code == 422, r.text
        page = c.get("/v1/me/notifications", params={"page_size": 1}).json()
        assert len(page["items"]) == 1 and page["next"]
        older = c.get("/v1/me/notifications", params={"page_size": 1, "cursor": page["next"]})
        assert older.json()["items"][0]["id"] != page["items"][0]["id"]
    with cast.client("gp") as c:  # another person's notification is not found, not shown
        assert (
            c.patch(f"/v1/me/notifications/{first['id']}", json={"read": False}).status_code == 404
        )
    with cast.stack.client(cast.admin) as c:
        assert c.get("/v1/me/notifications").status_code == 403
    with cast.stack.client() as c:
        assert c.get("/v1/me/notifications").status_code == 401


def test_while_the_mail_relay_is_down_nothing_is_lost(stack: RunningStack, cast: Cast) -> None:
    before = len(cast.mails("Un nouveau document dans votre DMP"))
    stack.infra.pause(stack.infra.smtp)
    try:
        cast.add_document("Compte rendu opératoire")
        # the inbox does not wait for the relay
        assert until(lambda: len(cast.mails("Un nouveau document dans votre DMP")) == before, 3)
    finally:
        stack.infra.resume(stack.infra.smtp)
    assert until(lambda: len(cast.mails("Un nouveau document dans votre DMP")) == before + 1, 60)
    time.sleep(1.0)
    assert len(cast.mails("Un nouveau document dans votre DMP")) == before + 1  # once


def test_a_notice_waits_for_identity_while_it_is_away(stack: RunningStack, cast: Cast) -> None:
    """Identity away (a crash, then its restart) for longer than an event's five attempts take
    (0.5 + 1 + 2 + 4 s of backoff): the notice waits for its contact details instead of
    spending its attempts, and the e-mail goes once identity is back, once."""
    patient = stack.create_patient(cast.admin)
    # Opened by the GP with the patient's consent: the patient never logged in, so notify has
    # never asked identity for their contact details (it keeps them a minute).
    stack.open_dossier(cast.tokens["gp"], patient)
    subject = "Un nouveau document dans votre DMP"

    def mails() -> list[Any]:
        return [m for m in stack.mailbox.messages_to(patient["email"]) if m["Subject"] == subject]

    with stack.stack.away("identity"):
        stack.add_document(cast.tokens["gp"], patient["ins"], "11502-2", "Bilan sanguin")
        time.sleep(10.0)
        assert not mails()  # no address without identity
    assert until(lambda: len(mails()) == 1, 60)
    time.sleep(1.0)
    assert len(mails()) == 1


def test_a_delivery_that_keeps_failing_becomes_a_dead_letter(
    stack: RunningStack, cast: Cast
) -> None:
    before = len(cast.mails("Un nouveau document dans votre DMP"))
    stack.infra.pause(stack.infra.smtp)
    try:
        cast.add_document("Compte rendu de sortie")
        # five attempts (about 12 s of backoff and timeouts), then given up and recorded
        with stack.client(cast.admin) as c:

            def dead() -> list[dict[str, Any]]:
                r = c.get("/v1/admin/notifications/dead-letters")
                assert r.status_code == 200, r.text
                return [d for d in r.json()["items"] if d["event_type"] == "document.added"]

            letters = until(dead, 60)
    finally:
        stack.infra.resume(stack.infra.smtp)
    assert letters, "the failure was recorded"
    assert letters[0]["channel"] == "email" and letters[0]["attempts"] == 5
    assert "Compte rendu" not in str(letters)  # no content in the dead letter either
    time.sleep(2.0)
    assert len(cast.mails("Un nouveau document dans votre DMP")) == before  # given up
    assert "document_added" in cast.kinds("patient")  # the inbox has it all the same
    with cast.client("patient") as c:
        assert c.get("/v1/admin/notifications/dead-letters").status_code == 403


async def test_a_delivery_left_half_done_by_a_crash_is_sent(
    stack: RunningStack, cast: Cast
) -> None:
    """A process that claimed an e-mail and died before sending it must not lose it."""
    event = new_event(
        "document.added",
        dossier_events.DocumentAdded(document_id=f"crash-{uuid.uuid4().hex[:6]}"),
        source="dossier",
        clock=SystemClock(),
        patient_ins=cast.ins,
    )
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.infra.mongo.url)
    try:
        await mongo["notify"]["deliveries"].insert_one(
            {
                "_id": f"{event.id}:patient:{cast.ins}:email",
                "channel": "email",
                "created_at": long_ago,
                "state": "sending",
                "at": long_ago,
            }
        )
    finally:
        await mongo.close()
    before = len(cast.mails("Un nouveau document dans votre DMP"))
    bus = EventBus(stack.infra.nats.url, "notify-crash-test")
    await bus.connect()
    try:
        await bus.publish_event(event)
    finally:
        await bus.close()
    deadline = time.monotonic() + 30
    while len(cast.mails("Un nouveau document dans votre DMP")) == before:
        assert time.monotonic() < deadline, "the half-done delivery was not taken over"
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.0)
    assert len(cast.mails("Un nouveau document dans votre DMP")) == before + 1
