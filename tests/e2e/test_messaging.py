"""Secure messaging through the gateway, on the whole stack: who opens, who replies, who closes;
the pharmacy exception on the insurer's claims; a blocked professional; attachments judged by
their content and DMP documents copied only when the sender may read them; content sealed at
rest, announced without a word of it, traced without a word of it; gone with a purge."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from dmp_kit.errors import PROBLEM_BASE
from dmp_stack.testing import RunningStack, collect_events, until

PROBLEM = PROBLEM_BASE
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)
DAY = 86_400


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


class People:
    """A patient with an open DMP, and the professionals of the story, each logged in."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.admin = stack.admin_token()
        self.patient = stack.create_patient(self.admin)
        self.ins = self.patient["ins"]
        self.other_patient = stack.create_patient(self.admin)
        professions = {
            "gp": "10",
            "doctor": "10",
            "nurse": "60",
            "pharmacy": "21",
            "old pharmacy": "21",
            "other pharmacy": "21",
        }
        self.pros = {n: stack.create_professional(self.admin, c) for n, c in professions.items()}
        self.tokens: dict[str, str] = {}
        self.open_dossier()

    def open_dossier(self) -> None:
        self.stack.open_dossier(self.token("patient"), self.patient)
        with self.client("patient") as c:
            r = c.put(
                f"/v1/dossiers/{self.ins}/attending-physician",
                json={"rpps": self.pros["gp"]["rpps"]},
            )
            assert r.status_code == 200, r.text

    def token(self, who: str, fresh: bool = False) -> str:
        if fresh or who not in self.tokens:
            if who in ("patient", "other patient"):
                p = self.patient if who == "patient" else self.other_patient
                t = self.stack.login("patient", p["ins"], p["password"], p["email"])
            else:
                p = self.pros[who]
                t = self.stack.login("professional", p["rpps"], p["password"], p["email"])
            self.tokens[who] = t["access_token"]
        return self.tokens[who]

    def client(self, who: str) -> httpx.Client:
        return self.stack.client(self.token(who))

    def rpps(self, who: str) -> str:
        return str(self.pros[who]["rpps"])

    def open(self, who: str, **body: Any) -> httpx.Response:
        given = {"patient_ins": self.ins, "subject": "Suivi", "body": "Bonjour", **body}
        with self.client(who) as c:
            return c.post("/v1/conversations", json=given)

    def thread(self, who: str, conversation_id: str) -> dict[str, Any]:
        with self.client(who) as c:
            r = c.get(f"/v1/conversations/{conversation_id}")
        assert r.status_code == 200, r.text
        thread: dict[str, Any] = r.json()
        return thread

    def listing(self, who: str) -> dict[str, Any]:
        with self.client(who) as c:
            r = c.get("/v1/conversations")
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    def reply(self, who: str, conversation_id: str, text: str, **more: Any) -> httpx.Response:
        with self.client(who) as c:
            return c.post(
                f"/v1/conversations/{conversation_id}/messages", json={"body": text, **more}
            )


@pytest.fixture(scope="module")
def people(stack: RunningStack) -> People:
    return People(stack)


def mail_text(message: Any) -> str:
    body = message.get_body(("plain",))
    return f"{message['Subject']}\n{body.get_content() if body is not None else ''}"


def problem(r: httpx.Response, status: int, slug: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == PROBLEM + slug, body
    if field is not None:
        assert body.get("field") == field, body


def test_a_professional_opens_the_patient_replies_and_the_professional_closes(
    people: People,
) -> None:
    r = people.open(
        "doctor",
        subject="Vos résultats",
        body="Vos analyses sont normales.",
        attachments=[{"filename": "bilan.pdf", "content_base64": b64(PDF)}],
    )
    assert r.status_code == 201, r.text
    opened = r.json()
    cid = opened["conversation"]["id"]
    assert opened["conversation"]["status"] == "open"
    assert opened["conversation"]["counterpart"]["id"] == people.rpps("doctor")
    assert opened["conversation"]["patient"]["name"] == "Camille Martin"
    [attachment] = opened["message"]["attachments"]
    assert attachment["mime_type"] == "application/pdf" and attachment["filename"] == "bilan.pdf"

    # the patient's list: newest first, one unread; the doctor's: nothing unread
    mine = people.listing("patient")
    assert mine["items"][0]["id"] == cid and mine["items"][0]["unread"] == 1
    assert mine["items"][0]["message_count"] == 1
    assert mine["unread_total"] >= 1
    assert people.listing("doctor")["items"][0]["unread"] == 0

    # read: the message, its attachment's bytes; the doctor sees the read receipt
    thread = people.thread("patient", cid)
    assert [m["body"] for m in thread["messages"]] == ["Vos analyses sont normales."]
    with people.client("patient") as c:
        r = c.get(f"/v1/conversations/{cid}/attachments/{attachment['id']}")
    assert r.status_code == 200 and r.content == PDF
    assert "sandbox" in r.headers["content-security-policy"]
    assert people.listing("patient")["items"][0]["unread"] == 0
    assert people.thread("doctor", cid)["messages"][0]["read_at"]

    # the patient replies; the doctor has one unread
    r = people.reply("patient", cid, "Merci docteur.")
    assert r.status_code == 201, r.text
    assert r.json()["sender"]["kind"] == "patient" and not r.json().get("read_at")
    assert people.listing("doctor")["items"][0]["unread"] == 1
    assert people.listing("doctor")["items"][0]["message_count"] == 2

    # only the professional side closes; then the patient cannot reply until it reopens
    with people.client("patient") as c:
        problem(c.post(f"/v1/conversations/{cid}/close"), 403, "conversation-not-allowed")
    with people.client("doctor") as c:
        r = c.post(f"/v1/conversations/{cid}/close")
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    problem(people.reply("patient", cid, "Encore une question"), 409, "conversation-closed")
    with people.client("doctor") as c:
        assert c.post(f"/v1/conversations/{cid}/reopen").json()["status"] == "open"
    assert people.reply("patient", cid, "Encore une question").status_code == 201
    assert [m["sender"]["kind"] for m in people.thread("doctor", cid)["messages"]] == [
        "professional",
        "patient",
        "patient",
    ]

    # to anyone else, the conversation does not exist
    for outsider in ("other patient", "nurse", "gp"):
        with people.client(outsider) as c:
            problem(c.get(f"/v1/conversations/{cid}"), 404, "not-found")
            problem(
                c.post(f"/v1/conversations/{cid}/messages", json={"body": "?"}), 404, "not-found"
            )
        assert cid not in [i["id"] for i in people.listing(outsider)["items"]]


def test_every_access_is_traced_without_a_word_of_the_message(people: People) -> None:
    marker = f"secret-{uuid.uuid4().hex[:10]}"
    r = people.open("nurse", subject=f"Pansement {marker}", body=f"Soins {marker}")
    assert r.status_code == 201, r.text
    cid = r.json()["conversation"]["id"]
    people.thread("patient", cid)

    def messaging_entries() -> list[dict[str, Any]]:
        with people.client("patient") as c:
            r = c.get(f"/v1/dossiers/{people.ins}/access-log", params={"page_size": 100})
        assert r.status_code == 200, r.text
        return [e for e in r.json()["entries"] if f"conversation={cid}" in (e.get("query") or "")]

    entries = until(lambda: len(messaging_entries()) >= 2 and messaging_entries())
    assert entries, "the conversation's trail reaches the access log"
    by_action = {(e["action"], e["actor"]["kind"]) for e in entries}
    assert ("create", "professional") in by_action and ("read", "patient") in by_action
    written = next(e for e in entries if e["action"] == "create")
    assert written["actor"]["id"] == people.rpps("nurse")
    assert f"to=patient:{people.ins}" in written["query"]
    assert all(marker not in str(e) for e in entries)
    # The professional's list shows the subject: it is traced as a search of the patient's
    # messaging, before it is answered.
    with people.client("nurse") as c:
        assert c.get("/v1/conversations").status_code == 200

    def listed() -> list[dict[str, Any]]:
        with people.client("patient") as c:
            r = c.get(f"/v1/dossiers/{people.ins}/access-log", params={"page_size": 100})
        return [
            e
            for e in r.json()["entries"]
            if e.get("query") == "conversations=list"
            and e["actor"]["id"] == people.rpps("nurse")
            and e["action"] == "search"
        ]

    assert until(lambda: bool(listed())), "the professional's list is traced"

    # Closing it is traced at once, not at the relay's next sweep (a minute).
    with people.client("nurse") as c:
        assert c.post(f"/v1/conversations/{cid}/close").status_code == 200

    def closed() -> bool:
        return any(e["action"] == "update" for e in messaging_entries())

    assert until(closed, timeout=10), "the closing reaches the access log"


def test_a_new_message_is_announced_without_its_content(
    people: People, stack: RunningStack
) -> None:
    marker = f"confidentiel-{uuid.uuid4().hex[:10]}"
    r = people.open("gp", subject=f"Objet {marker}", body=f"Texte {marker}")
    assert r.status_code == 201, r.text

    def announced() -> list[dict[str, Any]]:
        with people.client("patient") as c:
            r = c.get("/v1/me/notifications", params={"page_size": 100})
        return [n for n in r.json()["items"] if n["kind"] == "message_received"]

    notices = until(announced)
    assert notices, "the patient's inbox announces the message"
    assert notices[0]["title"] == "Vous avez reçu un nouveau message"
    assert all(marker not in n["body"] and marker not in n["title"] for n in notices)
    subject = "Vous avez reçu un nouveau message"
    mails = until(lambda: stack.mailbox.messages_to(people.patient["email"], subject))
    assert mails, "and by e-mail, as the default preferences say"
    assert all(
        marker not in mail_text(m) for m in stack.mailbox.messages_to(people.patient["email"])
    )
    # and the professional is told of the patient's reply
    cid = r.json()["conversation"]["id"]
    assert people.reply("patient", cid, f"Réponse {marker}").status_code == 201
    gp_email = people.pros["gp"]["email"]
    assert until(lambda: stack.mailbox.messages_to(gp_email, subject))
    assert all(marker not in mail_text(m) for m in stack.mailbox.messages_to(gp_email))


def test_a_patient_opens_a_conversation_only_with_a_pharmacy_that_dispensed_within_12_months(
    people: People, stack: RunningStack
) -> None:
    insurer = stack.client_token(people.admin, ["insurer"])
    today = date.today()
    run = uuid.uuid4().hex[:8]
    rows = [
        ("1", people.rpps("pharmacy"), today - timedelta(days=40), "drug"),
        ("2", people.rpps("old pharmacy"), today - timedelta(days=400), "drug"),
        ("3", people.rpps("gp"), today - timedelta(days=10), "consultation"),
        ("4", people.rpps("other pharmacy"), today - timedelta(days=20), "lab"),
    ]
    header = (
        "claim_id,ins,care_date,kind,code,label,professional_rpps,amount_paid,amount_reimbursed"
    )
    lines = [header] + [
        f"{run}-{n},{people.ins},{d.isoformat()},{kind},X,Soins,{rpps},10.00,7.00"
        for n, rpps, d, kind in rows
    ]
    with stack.client(insurer) as c:
        r = c.post(
            "/v1/ingest/batches",
            content=("\n".join(lines) + "\n").encode(),
            headers={"content-type": "text/csv"},
        )
        assert r.status_code == 202, r.text
        batch = r.json()["batch_id"]
        done = until(lambda: c.get(f"/v1/ingest/batches/{batch}").json()["status"] == "done")
        assert done and c.get(f"/v1/ingest/batches/{batch}").json()["accepted"] == 4

    def patient_opens(pharmacy: str) -> httpx.Response:
        with people.client("patient") as c:
            return c.post(
                "/v1/conversations",
                json={"pharmacy_rpps": pharmacy, "subject": "Ordonnance", "body": "Bonjour"},
            )

    r = patient_opens(people.rpps("pharmacy"))
    assert r.status_code == 201, r.text
    assert r.json()["conversation"]["opened_by"] == "patient"
    assert r.json()["conversation"]["counterpart"]["profession"] == "21"
    for refused in ("old pharmacy", "other pharmacy", "gp", "doctor"):
        problem(
            patient_opens(people.rpps(refused)), 403, "conversation-not-allowed", "pharmacy_rpps"
        )
    # nor for someone else, nor naming a patient
    with people.client("patient") as c:
        r = c.post(
            "/v1/conversations",
            json={"patient_ins": people.other_patient["ins"], "subject": "x", "body": "x"},
        )
        problem(r, 422, "invalid-rpps", "pharmacy_rpps")
    with people.client("other patient") as c:
        r = c.post(
            "/v1/conversations",
            json={"pharmacy_rpps": people.rpps("pharmacy"), "subject": "x", "body": "x"},
        )
        assert r.status_code in (403, 404), r.text  # no dispensation to them, no open DMP
    # a professional does not pick a pharmacy
    problem(
        people.open("doctor", pharmacy_rpps=people.rpps("pharmacy")),
        422,
        "validation-error",
        "pharmacy_rpps",
    )


def test_a_blocked_professional_can_no_longer_write(people: People) -> None:
    r = people.open("nurse", subject="Visite", body="Je passe demain")
    assert r.status_code == 201, r.text
    cid = r.json()["conversation"]["id"]
    with people.client("doctor") as c:  # not the patient: cannot block
        problem(c.post(f"/v1/conversations/{cid}/block"), 404, "not-found")
    with people.client("patient") as c:
        r = c.post(f"/v1/conversations/{cid}/block")
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text

    def blocked_traced() -> bool:
        with people.client("patient") as c:
            r = c.get(f"/v1/dossiers/{people.ins}/access-log", params={"page_size": 100})
        return any(
            e["action"] == "update" and f"conversation={cid}" in (e.get("query") or "")
            for e in r.json()["entries"]
        )

    # traced at once, not at the relay's next sweep (a minute)
    assert until(blocked_traced, timeout=10), "the block reaches the access log"
    with people.client("patient") as c:
        team = c.get(f"/v1/dossiers/{people.ins}/professionals").json()
    assert people.rpps("nurse") in str(team.get("blocked")), team
    problem(people.open("nurse"), 403, "access-denied")
    with people.client("nurse") as c:
        problem(c.post(f"/v1/conversations/{cid}/reopen"), 403, "access-denied")
        # refused everything, their own conversation included; its subject no longer listed
        problem(c.get(f"/v1/conversations/{cid}"), 403, "access-denied")
        listed = {i["id"]: i for i in c.get("/v1/conversations").json()["items"]}
        assert listed[cid]["subject"] == ""
        # the DMP too: rule 5 is one rule
        assert c.get(f"/v1/dossiers/{people.ins}/documents").status_code == 403
    with people.client("patient") as c:
        r = c.delete(f"/v1/dossiers/{people.ins}/professionals/{people.rpps('nurse')}")
        assert r.status_code in (200, 204), r.text


def test_attachments_are_judged_by_content_and_dmp_documents_copied_only_if_readable(
    people: People,
) -> None:
    text_named_pdf = {"filename": "résultats.pdf", "content_base64": b64(b"just some text")}
    problem(
        people.open("doctor", attachments=[text_named_pdf]),
        422,
        "invalid-attachment",
        "attachments.0.content",
    )
    too_many = [{"filename": "a.png", "content_base64": b64(PNG)}] * 4
    assert people.open("doctor", attachments=too_many).status_code == 422
    problem(
        people.open("doctor", attachments=[{"filename": "a.png", "content_base64": "%%%"}]),
        422,
        "validation-error",
        "attachments.0.content_base64",
    )

    # a document of the DMP, which the GP (the attending physician) reads and the doctor, not
    # in the care team, does not
    with people.client("gp") as c:
        r = c.post(
            f"/v1/dossiers/{people.ins}/documents",
            json={
                "type_code": "11488-4",
                "title": "Compte rendu de consultation",
                "mime_type": "application/pdf",
                "content_base64": b64(PDF),
            },
        )
    assert r.status_code == 201, r.text
    document_id = r.json()["id"]
    before = len(people.listing("doctor")["items"])
    refused = people.open("doctor", attachments=[{"dmp_document_id": document_id}])
    assert refused.status_code == 403, refused.text
    assert len(people.listing("doctor")["items"]) == before, "nothing written on a refusal"

    # one hidden from the patient until its announcement is not sent to them either (rule 8)
    with people.client("gp") as c:
        r = c.post(
            f"/v1/dossiers/{people.ins}/documents",
            json={
                "type_code": "11488-4",
                "title": "Résultat à annoncer",
                "mime_type": "application/pdf",
                "content_base64": b64(PDF),
                "hidden_from_patient": True,
            },
        )
        assert r.status_code == 201, r.text
    problem(
        people.open("gp", attachments=[{"dmp_document_id": r.json()["id"]}]),
        403,
        "conversation-not-allowed",
        "attachments.0.dmp_document_id",
    )

    r = people.open("gp", attachments=[{"dmp_document_id": document_id}])
    assert r.status_code == 201, r.text
    cid = r.json()["conversation"]["id"]
    [copied] = r.json()["message"]["attachments"]
    assert copied["dmp_document_id"] == document_id and copied["filename"].startswith("Compte")
    with people.client("patient") as c:
        assert c.get(f"/v1/conversations/{cid}/attachments/{copied['id']}").content == PDF

    # the patient sends a picture; the GP files it into the DMP, where every rule applies
    r = people.reply(
        "patient",
        cid,
        "Voici la photo",
        attachments=[{"filename": "photo.png", "content_base64": b64(PNG)}],
    )
    assert r.status_code == 201, r.text
    [photo] = r.json()["attachments"]
    with people.client("patient") as c:
        problem(
            c.post(
                f"/v1/conversations/{cid}/attachments/{photo['id']}/file",
                json={"type_code": "11488-4"},
            ),
            403,
            "conversation-not-allowed",
        )
    with people.client("gp") as c:
        r = c.post(
            f"/v1/conversations/{cid}/attachments/{photo['id']}/file",
            json={"type_code": "11488-4", "title": "Photo de la plaie"},
        )
        assert r.status_code == 201, r.text
        filed = r.json()["document_id"]
        r = c.get(f"/v1/dossiers/{people.ins}/documents/{filed}")
        assert r.status_code == 200, r.text
        assert r.json()["title"] == "Photo de la plaie" and r.json()["mime_type"] == "image/png"
        assert r.json()["author"] == people.rpps("gp")
    thread = people.thread("gp", cid)
    assert thread["messages"][-1]["attachments"][0]["filed_document_id"] == filed


def test_content_is_sealed_at_rest_and_absent_from_events_and_logs(
    people: People, stack: RunningStack
) -> None:
    marker = f"zebra{uuid.uuid4().hex[:12]}"
    r = people.open(
        "doctor",
        subject=f"Sujet {marker}",
        body=f"Corps {marker}",
        attachments=[{"filename": f"{marker}.png", "content_base64": b64(PNG + marker.encode())}],
    )
    assert r.status_code == 201, r.text
    cid = r.json()["conversation"]["id"]
    assert people.reply("patient", cid, f"Réponse {marker}").status_code == 201
    people.thread("doctor", cid)

    client: MongoClient[dict[str, Any]] = MongoClient(stack.infra.mongo.url)
    try:
        db = client["messaging"]
        stored = [doc for name in db.list_collection_names() for doc in db[name].find({})]
        assert any(doc.get("_id") == cid for doc in stored)
        assert all(marker.encode() not in repr(doc).encode() for doc in stored)
    finally:
        client.close()

    def sent(seen: list[Any]) -> bool:
        return sum(e.message_sent.conversation_id == cid for e in seen) >= 2

    def traced(seen: list[Any]) -> bool:
        return sum(f"conversation={cid}" in e.audit_record.query for e in seen) >= 3

    url = stack.infra.nats.url
    seen = asyncio.run(collect_events(url, "MESSAGING", "message.>", sent))
    assert sent(seen), "both messages were announced on the bus"
    trail = asyncio.run(collect_events(url, "AUDIT", "audit.messaging", traced))
    assert traced(trail), "two writes and a read were traced"
    assert all(marker.encode() not in e.SerializeToString() for e in [*seen, *trail])

    time.sleep(0.5)  # what the services logged of it is on disk
    logs = stack.stack.state_dir / "logs"
    for log in logs.glob("*.log"):
        if log.name != "smtp.log":
            assert marker not in log.read_text(errors="replace"), log.name


def test_a_purge_destroys_the_conversations_and_their_key(clock: RunningStack) -> None:
    stack = clock
    people = People(stack)
    r = people.open("doctor", subject="Avant la suppression", body="Bonjour")
    assert r.status_code == 201, r.text
    with people.client("patient") as c:
        assert c.post(f"/v1/dossiers/{people.ins}/close").status_code == 200
        assert c.post(f"/v1/dossiers/{people.ins}/deletion-request").status_code == 200
    stack.set_clock_offset(31 * DAY)  # an express deletion is purged after 30 days

    client: MongoClient[dict[str, Any]] = MongoClient(stack.infra.mongo.url)
    try:
        db = client["messaging"]

        def gone() -> bool:
            return (
                db["data_keys"].count_documents({"_id": people.ins}) == 0
                and db["conversations"].count_documents({"ins": people.ins}) == 0
                and db["attachments"].count_documents({"ins": people.ins}) == 0
            )

        assert until(gone, timeout=60), "the purge reached messaging"
    finally:
        client.close()
    fresh = people.token("patient", fresh=True)
    with stack.client(fresh) as c:
        assert c.get("/v1/conversations").json()["items"] == []


def test_an_establishments_mailbox_writes_and_its_document_software_does_not(
    people: People, stack: RunningStack
) -> None:
    mailbox = stack.client_token(people.admin, ["mailbox"])
    with stack.client(mailbox) as c:
        r = c.post(
            "/v1/conversations",
            json={"patient_ins": people.ins, "subject": "Votre séjour", "body": "Bonjour"},
        )
        assert r.status_code == 201, r.text
        counterpart = r.json()["conversation"]["counterpart"]
        assert counterpart["kind"] == "system"
        assert r.json()["conversation"]["patient"].get("name") is None  # software sees the INS
        cid = r.json()["conversation"]["id"]
    assert people.reply("patient", cid, "Merci").status_code == 201
    with stack.client(mailbox) as c:
        assert c.get("/v1/conversations").json()["items"][0]["id"] == cid
    software = stack.client_token(people.admin, ["facility"])
    with stack.client(software) as c:
        r = c.post(
            "/v1/conversations",
            json={"patient_ins": people.ins, "subject": "x", "body": "x"},
        )
        problem(r, 403, "forbidden")


def test_each_side_searches_its_own_messages(people: People) -> None:
    marker = uuid.uuid4().hex[:8]
    r = people.open("gp", subject=f"Pansement {marker}", body="Prochaine visite jeudi")
    assert r.status_code == 201, r.text
    found_id = r.json()["conversation"]["id"]
    r = people.open("gp", subject=f"Autre {marker}", body="Rien à voir")
    assert r.status_code == 201, r.text
    with people.client("patient") as c:
        r = c.post(
            f"/v1/conversations/{found_id}/messages", json={"body": f"Les résultats {marker}z"}
        )
        assert r.status_code == 201, r.text
        # Case and accents aside, in a message as in a subject.
        for q in (f"RESULTATS {marker}Z", f"pansement {marker}"):
            r = c.get("/v1/conversations", params={"q": q})
            assert r.status_code == 200, r.text
            assert [i["id"] for i in r.json()["items"]] == [found_id], q
        assert c.get("/v1/conversations", params={"q": f"absent-{marker}"}).json()["items"] == []
        r = c.get("/v1/conversations", params={"q": "a"})
        assert r.status_code == 422 and r.json()["field"] == "q", r.text
    with people.client("gp") as c:
        r = c.get("/v1/conversations", params={"q": "JEUDI"})
        assert found_id in [i["id"] for i in r.json()["items"]]
    # Nobody else finds it.
    with people.client("other patient") as c:
        assert c.get("/v1/conversations", params={"q": f"pansement {marker}"}).json()["items"] == []
