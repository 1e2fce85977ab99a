"""Downloading all of one's data, on the whole stack: a patient asks for an export, follows its
progress, downloads a ZIP holding exactly what they may see (documents hidden from them until
their announcement left out, masked ones in), their profile, messages and access log; nobody
else gets it; the download is traced; the archive is gone after its keeping time, and every
trace of the export with a purge."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import httpx
from pymongo import MongoClient

from dmp_kit.errors import PROBLEM_BASE
from dmp_stack.testing import RunningStack, until

DAY = 86_400
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"


def problem(r: httpx.Response, status: int, slug: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == PROBLEM_BASE + slug, r.json()


class Story:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = stack.admin_token()
        self.patient = stack.create_patient(admin)
        self.other = stack.create_patient(admin)
        self.gp = stack.create_professional(admin, "10")
        self.ins = self.patient["ins"]
        stack.open_dossier(self.token("patient"), self.patient)
        with self.client("patient") as c:
            r = c.put(
                f"/v1/dossiers/{self.ins}/attending-physician", json={"rpps": self.gp["rpps"]}
            )
            assert r.status_code == 200, r.text

    def token(self, who: str) -> str:
        if who == "gp":
            p = self.gp
            return str(
                self.stack.login("professional", p["rpps"], p["password"], p["email"])[
                    "access_token"
                ]
            )
        p = self.patient if who == "patient" else self.other
        return str(self.stack.login("patient", p["ins"], p["password"], p["email"])["access_token"])

    def client(self, who: str) -> httpx.Client:
        return self.stack.client(self.token(who))

    def add(self, c: httpx.Client, title: str, content: bytes, mime: str, **more: Any) -> str:
        r = c.post(
            f"/v1/dossiers/{self.ins}/documents",
            json={
                "type_code": "11488-4",
                "title": title,
                "mime_type": mime,
                "content_base64": base64.b64encode(content).decode(),
                **more,
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def test_a_patient_downloads_all_their_data(clock: RunningStack) -> None:
    stack = clock
    story = Story(stack)
    ins = story.ins
    with story.client("gp") as c:
        plain = story.add(c, "Compte rendu : ../../etc/passwd été", b"tout va bien", "text/plain")
        hidden = story.add(
            c, "Résultats à annoncer", b"a annoncer", "text/plain", hidden_from_patient=True
        )
        masked = story.add(c, "Bilan psychologique", PDF, "application/pdf")
        r = c.put(f"/v1/dossiers/{ins}/profile", json={"allergies": ["Pénicilline"]})
        assert r.status_code == 200, r.text
        r = c.post(
            "/v1/conversations",
            json={"patient_ins": ins, "subject": "Suivi du bilan", "body": "Bonjour, à bientôt"},
        )
        assert r.status_code == 201, r.text
        conversation = r.json()["conversation"]["id"]

    patient = story.client("patient")
    with patient as c:
        r = c.patch(
            f"/v1/dossiers/{ins}/documents/{masked}", json={"masked_from_professionals": True}
        )
        assert r.status_code == 200, r.text
        r = c.put(
            f"/v1/dossiers/{ins}/emergency-contacts",
            json={"contacts": [{"name": "Jeanne Martin", "phone": "+33612345678"}]},
        )
        assert r.status_code == 200, r.text
        r = c.post(f"/v1/conversations/{conversation}/messages", json={"body": "Merci docteur"})
        assert r.status_code == 201, r.text
        for kind, value, unit in (("weight", 70, "kg"), ("height", 175, "cm")):
            r = c.post(
                f"/v1/dossiers/{ins}/measurements",
                json={
                    "kind": kind,
                    "value": value,
                    "unit": unit,
                    "measured_at": "2026-11-01T08:00:00+01:00",
                },
            )
            assert r.status_code == 201, r.text
        readable = {
            d["id"]: c.get(f"/v1/dossiers/{ins}/documents/{d['id']}/content").content
            for d in c.get(f"/v1/dossiers/{ins}/documents").json()["items"]
        }
    assert set(readable) == {plain, masked}

    # Only a patient, for themselves.
    with story.client("gp") as c:
        problem(c.post("/v1/me/exports"), 403, "patient-only")
        problem(c.get("/v1/me/exports"), 403, "patient-only")

    with story.client("patient") as c:
        r = c.post("/v1/me/exports")
        assert r.status_code == 202, r.text
        asked = r.json()
        assert asked["status"] == "pending" and asked["progress"] == 0 and asked["created_at"]
        export_id = asked["id"]
        seen: list[int] = []

        def ready() -> dict[str, Any] | None:
            r = c.get(f"/v1/me/exports/{export_id}")
            assert r.status_code == 200, r.text
            seen.append(r.json()["progress"])
            return r.json() if r.json()["status"] in ("ready", "failed") else None

        done = until(ready, timeout=60)
        assert done and done["status"] == "ready", done
        assert seen == sorted(seen) and seen[-1] == 100, seen
        assert done["size"] > 0 and done["expires_at"] > done["ready_at"]
        assert [e["id"] for e in c.get("/v1/me/exports").json()["items"]] == [export_id]
        problem(c.get(f"/v1/me/exports/{export_id}x"), 404, "export-not-found")

        r = c.get(f"/v1/me/exports/{export_id}/content")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/zip"
        day = asked["created_at"][:10]
        assert r.headers["content-disposition"] == (
            f'attachment; filename="mon-espace-sante-{day}.zip"'
        )
        assert len(r.content) == done["size"]
        archive = zipfile.ZipFile(io.BytesIO(r.content))

    names = archive.namelist()
    assert {"LISEZMOI.txt", "profil.json", "documents/index.json", "messages.json"} <= set(names)
    assert "journal-des-acces.json" in names
    assert "messages.json" in archive.read("LISEZMOI.txt").decode()

    measured = json.loads(archive.read("constantes.json"))["series"]
    assert [p["value"] for p in measured["weight"]] == [70]
    assert [round(p["value"], 1) for p in measured["bmi"]] == [22.9]
    assert "constantes.json" in archive.read("LISEZMOI.txt").decode()

    profile = json.loads(archive.read("profil.json"))
    assert profile["identity"]["ins"] == ins
    assert profile["identity"]["email"] == story.patient["email"]
    assert profile["profile"]["allergies"] == ["Pénicilline"]
    assert profile["emergency_contacts"][0]["name"] == "Jeanne Martin"

    index = json.loads(archive.read("documents/index.json"))
    assert index["pending"] == 1  # the hidden one, counted, not given
    listed = {d["id"]: d for d in index["items"]}
    assert set(listed) == {plain, masked}
    assert hidden not in archive.read("documents/index.json").decode()
    for doc_id, content in readable.items():
        path = listed[doc_id]["file"]
        assert path.startswith("documents/comptes_rendus/") and ".." not in path
        assert archive.read(path) == content
    assert listed[masked]["masked_from_professionals"] is True
    assert listed[masked]["file"].endswith(".pdf")
    assert "été" in listed[plain]["file"] and "passwd" in listed[plain]["file"]
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)
    assert len(names) == 6 + len(readable)

    (exported,) = json.loads(archive.read("messages.json"))["conversations"]
    assert exported["id"] == conversation and exported["subject"] == "Suivi du bilan"
    assert [m["body"] for m in exported["messages"]] == ["Bonjour, à bientôt", "Merci docteur"]

    trail = json.loads(archive.read("journal-des-acces.json"))["entries"]
    assert any(e.get("query") == "export" and e.get("action") == "execute" for e in trail)
    assert any(e.get("document_id") == masked for e in trail)
    # What names the hidden document (its creation) is withheld, as the patient reads it.
    assert not any(e.get("document_id") == hidden for e in trail)
    assert any(e.get("withheld") for e in trail)

    # Someone else's export does not exist for another patient.
    with story.client("other") as c:
        problem(c.get(f"/v1/me/exports/{export_id}"), 404, "export-not-found")
        problem(c.get(f"/v1/me/exports/{export_id}/content"), 404, "export-not-found")
        assert c.get("/v1/me/exports").json()["items"] == []

    # The asking and the download are in the patient's access log.
    with story.client("patient") as c:

        def traced() -> set[str]:
            entries = c.get(f"/v1/dossiers/{ins}/access-log", params={"page_size": 100}).json()
            return {e["action"] for e in entries["entries"] if e.get("query") == "export"}

        assert until(lambda: traced() == {"execute", "read"}), traced()

    # Past its keeping time (7 days), the archive is deleted; the record says so.
    stack.set_clock_offset(8 * DAY)
    with story.client("patient") as c:
        expired = until(lambda: c.get(f"/v1/me/exports/{export_id}").json()["status"] == "expired")
        assert expired, c.get(f"/v1/me/exports/{export_id}").json()
        problem(c.get(f"/v1/me/exports/{export_id}/content"), 404, "export-expired")
    with MongoClient(stack.infra.mongo.url) as client:
        assert client["dossier"]["export_parts"].count_documents({"export_id": export_id}) == 0

        # A purge removes every export of the dossier at once.
        with story.client("patient") as c:
            r = c.post(f"/v1/dossiers/{ins}/deletion-request")
            assert r.status_code == 200, r.text
        stack.set_clock_offset(100 * DAY)
        assert until(lambda: client["dossier"]["dossiers"].find_one({"_id": ins}) is None)
        assert client["dossier"]["exports"].count_documents({"ins": ins}) == 0


def test_exports_are_one_at_a_time_and_a_few_a_day(stack: RunningStack) -> None:
    story = Story(stack)
    with story.client("patient") as c:

        def running() -> bool:
            items = c.get("/v1/me/exports").json()["items"]
            return any(e["status"] in ("pending", "running") for e in items)

        created, refused = 0, 0
        while created < 3:
            r = c.post("/v1/me/exports")
            if r.status_code == 409:
                problem(r, 409, "export-running")
                refused += 1
                assert until(lambda: not running(), timeout=60)
                continue
            assert r.status_code == 202, r.text
            created += 1
        # Asked at once after another, an export waits for it (a build takes longer than a
        # request): at least once.
        assert refused >= 1
        assert until(lambda: not running(), timeout=60)
        assert [e["status"] for e in c.get("/v1/me/exports").json()["items"]] == ["ready"] * 3
        problem(c.post("/v1/me/exports"), 429, "export-rate-limited")
