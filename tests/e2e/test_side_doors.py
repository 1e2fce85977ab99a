"""Issue 16's side doors, through the gateway: what the rules hide on the main routes is hidden
on every other route too (PATCH, DELETE, links between versions, section counts, the records),
and a blocked professional or a closed dossier refuses everything."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from dmp_stack.testing import CareTeam, RunningStack, collect_events, make_ins, until

DAY = 86_400

PROBLEM = "application/problem+json"


def refused(r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM


class Dossier(CareTeam):
    """One patient's open DMP with a GP, an authorised doctor and an authorised pharmacist."""

    def add(self, who: str, type_code: str, title: str, **extra: Any) -> str:
        body = {
            "type_code": type_code,
            "title": title,
            "mime_type": "text/plain",
            "content_base64": base64.b64encode(title.encode()).decode(),
            **extra,
        }
        with self.client(who) as c:
            r = c.post(f"/v1/dossiers/{self.ins}/documents", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def get(self, who: str, path: str = "") -> Any:
        with self.client(who) as c:
            return c.get(f"/v1/dossiers/{self.ins}{path}")

    def patch(self, who: str, doc_id: str, body: dict[str, Any]) -> Any:
        with self.client(who) as c:
            return c.patch(f"/v1/dossiers/{self.ins}/documents/{doc_id}", json=body)

    def set_pro(self, name: str, status: str) -> None:
        with self.client("patient") as c:
            r = c.put(
                f"/v1/dossiers/{self.ins}/professionals/{self.pros[name]['rpps']}",
                json={"status": status},
            )
        assert r.status_code == 200, r.text


@pytest.fixture
def dossier(stack: RunningStack) -> Dossier:
    return Dossier(stack)


def test_a_document_hidden_from_the_patient_leaks_through_no_route(dossier: Dossier) -> None:
    hidden = dossier.add("doctor", "11488-4", "Annonce difficile", hidden_from_patient=True)
    refused(dossier.get("patient", f"/documents/{hidden}"), 403)
    for change in (
        {"masked_from_professionals": True},
        {"status": "archived"},
        {"hidden_from_patient": False},
    ):
        r = dossier.patch("patient", hidden, change)
        refused(r, 403)
        assert "Annonce" not in r.text and "11488-4" not in r.text
    # nothing went through
    meta = dossier.get("doctor", f"/documents/{hidden}").json()
    assert meta["status"] == "approved"
    assert meta["confidentiality"] == ["INVISIBLE_PATIENT"]
    with dossier.client("patient") as c:
        refused(c.delete(f"/v1/dossiers/{dossier.ins}/documents/{hidden}"), 403)

    # A new version hidden from the patient: the old one no longer points at it.
    v1 = dossier.add("doctor", "11502-2", "Biologie v1")
    v2 = dossier.add("doctor", "11502-2", "Biologie v2", replaces=v1, hidden_from_patient=True)
    old = dossier.get("patient", f"/documents/{v1}")
    assert old.status_code == 200, old.text
    assert old.json()["status"] == "superseded"
    assert "replaced_by" not in old.json()
    assert dossier.get("doctor", f"/documents/{v1}").json()["replaced_by"] == v2
    superseded = dossier.get("patient", "/documents?status=superseded").json()["items"]
    assert [d["id"] for d in superseded] == [v1]
    assert "replaced_by" not in superseded[0]

    # Counts are those of what the patient reads: two hidden, one superseded, none counted.
    counts = dossier.get("patient").json()["counts"]
    assert counts.get("comptes_rendus", 0) == 0
    assert counts.get("analyses", 0) == 0
    assert dossier.get("patient", "/documents").json()["pending"] == 2

    # The access log: the entries about hidden documents are there (the trace is whole, its
    # chain unbroken) but withheld from the patient; the GP reads them in full.
    def log(who: str) -> list[dict[str, Any]]:
        r = dossier.get(who, "/access-log?page_size=100")
        assert r.status_code == 200, r.text
        return list(r.json()["entries"])

    def until_traced() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = until(
            lambda: (e := log("gp")) and {hidden, v2} <= {x.get("document_id") for x in e} and e
        )
        assert entries, "the GP reads the entries about the hidden documents"
        return entries

    gp_entries = until_traced()
    patient_entries = log("patient")
    assert hidden not in str(patient_entries) and v2 not in str(patient_entries)
    withheld = [e for e in patient_entries if e["withheld"]]
    assert withheld, "the entries are withheld, not dropped"
    assert all(set(e) == {"seq", "leaf_hash", "withheld"} for e in withheld), withheld
    gp_leaves = {e["leaf_hash"] for e in gp_entries if e.get("document_id") in (hidden, v2)}
    assert gp_leaves <= {e["leaf_hash"] for e in withheld}


def test_section_counts_are_those_of_what_the_caller_may_read(dossier: Dossier) -> None:
    dossier.add("doctor", "18748-4", "Radio du thorax")  # the matrix hides it from pharmacists
    masked = dossier.add("doctor", "11502-2", "Sérologie")
    r = dossier.patch("patient", masked, {"masked_from_professionals": True})
    assert r.status_code == 200, r.text
    dossier.add("doctor", "57833-6", "Ordonnance")

    def counts(who: str) -> dict[str, int]:
        r = dossier.get(who)
        assert r.status_code == 200, r.text
        return dict(r.json()["counts"])

    assert counts("pharmacist") == {"traitements": 1}
    assert counts("gp") == {"imagerie": 1, "analyses": 1, "traitements": 1}
    assert counts("patient") == {"imagerie": 1, "analyses": 1, "traitements": 1}
    # the author sees what they wrote, masked or not
    assert counts("doctor") == {"imagerie": 1, "analyses": 1, "traitements": 1}


def test_profile_contacts_and_directives_follow_the_matrix_and_blocking(
    dossier: Dossier,
) -> None:
    with dossier.client("patient") as c:
        r = c.put(
            f"/v1/dossiers/{dossier.ins}/advance-directives",
            json={"text": "Pas d'acharnement thérapeutique."},
        )
        assert r.status_code == 200, r.text
        r = c.put(
            f"/v1/dossiers/{dossier.ins}/emergency-contacts",
            json={"contacts": [{"name": "Paul", "relationship": "frère", "phone": "0601020304"}]},
        )
        assert r.status_code == 200, r.text
    # Advance directives count as EXPPAT_3: only doctors read them.
    refused(dossier.get("pharmacist", "/advance-directives"), 403)
    assert dossier.get("gp", "/advance-directives").status_code == 200
    assert dossier.get("doctor", "/advance-directives").status_code == 200
    # Profile and contacts count as a synthesis: every profession of the care team reads them.
    assert dossier.get("pharmacist", "/profile").status_code == 200
    assert dossier.get("pharmacist", "/emergency-contacts").status_code == 200
    # Outside the care team: nothing, read or write.
    refused(dossier.get("outsider", "/profile"), 403)
    profile = {"allergies": ["pénicilline"]}
    with dossier.client("outsider") as c:
        refused(c.put(f"/v1/dossiers/{dossier.ins}/profile", json=profile), 403)
    with dossier.client("doctor") as c:
        assert c.put(f"/v1/dossiers/{dossier.ins}/profile", json=profile).status_code == 200
    # Blocked: refused everything, whatever else applies (rule 5).
    dossier.set_pro("doctor", "blocked")
    for path in ("/profile", "/emergency-contacts", "/advance-directives"):
        refused(dossier.get("doctor", path), 403)
    with dossier.client("doctor") as c:
        refused(c.put(f"/v1/dossiers/{dossier.ins}/profile", json={"allergies": []}), 403)
    assert dossier.get("patient", "/profile").json()["allergies"] == ["pénicilline"]


def test_a_blocked_author_is_refused_everything(dossier: Dossier) -> None:
    hidden = dossier.add("doctor", "11488-4", "À annoncer", hidden_from_patient=True)
    plain = dossier.add("doctor", "11488-4", "Consultation")
    dossier.set_pro("doctor", "blocked")
    refused(dossier.patch("doctor", hidden, {"hidden_from_patient": False}), 403)
    refused(dossier.patch("doctor", plain, {"status": "archived"}), 403)
    with dossier.client("doctor") as c:
        refused(c.delete(f"/v1/dossiers/{dossier.ins}/documents/{plain}"), 403)
        refused(c.get(f"/v1/dossiers/{dossier.ins}/documents/{plain}"), 403)
    # Nothing changed.
    meta = dossier.get("gp", f"/documents/{hidden}").json()
    assert meta["confidentiality"] == ["INVISIBLE_PATIENT"]
    assert dossier.get("gp", f"/documents/{plain}").json()["status"] == "approved"


def test_a_closed_dossier_changes_only_by_reopening(dossier: Dossier) -> None:
    doc = dossier.add("gp", "11488-4", "Consultation")
    with dossier.client("patient") as c:
        assert c.post(f"/v1/dossiers/{dossier.ins}/close").status_code == 200
        refused(c.put(f"/v1/dossiers/{dossier.ins}/profile", json={"allergies": ["x"]}), 409)
    with dossier.client("gp") as c:
        refused(c.delete(f"/v1/dossiers/{dossier.ins}/documents/{doc}"), 409)
    refused(dossier.patch("gp", doc, {"status": "archived"}), 409)
    with dossier.client("patient") as c:
        assert c.post(f"/v1/dossiers/{dossier.ins}/reopen").status_code == 200
    assert dossier.get("gp", f"/documents/{doc}").json()["status"] == "approved"


def test_archive_and_unarchive(dossier: Dossier) -> None:
    doc = dossier.add("doctor", "11488-4", "Consultation ancienne")
    refused(dossier.patch("pharmacist", doc, {"status": "archived"}), 403)
    r = dossier.patch("doctor", doc, {"status": "archived"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "archived"
    archived = dossier.get("patient", "/documents?status=archived").json()["items"]
    assert [d["id"] for d in archived] == [doc]
    assert dossier.get("patient", "/documents?status=approved").json()["items"] == []
    r = dossier.patch("patient", doc, {"status": "approved"})  # the patient unarchives
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    assert [d["id"] for d in dossier.get("gp", "/documents").json()["items"]] == [doc]


def test_a_list_cursor_names_only_what_the_caller_reads(dossier: Dossier) -> None:
    """A pharmacist may read 3 documents of 27: pages of 2 are full, and each cursor names the
    last document returned, never one the matrix hides from them (nor how many those are)."""
    wanted = []
    for i in range(3):
        wanted.append(dossier.add("doctor", "57833-6", f"Ordonnance {i}"))
        for j in range(8):
            dossier.add("doctor", "18748-4", f"Imagerie {i}.{j}")
    pages: list[list[str]] = []
    cursors: list[str] = []
    with dossier.client("pharmacist") as c:
        while True:
            params = {"page_size": 2, **({"cursor": cursors[-1]} if cursors else {})}
            r = c.get(f"/v1/dossiers/{dossier.ins}/documents", params=params)
            assert r.status_code == 200, r.text
            pages.append([d["id"] for d in r.json()["items"]])
            if not r.json().get("next"):
                break
            cursors.append(r.json()["next"])
        assert pages == [wanted[::-1][:2], wanted[::-1][2:]]
        for cursor in cursors:
            _at, doc_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            assert doc_id in wanted
        r = c.get(f"/v1/dossiers/{dossier.ins}/documents", params={"type_code": "18748-4"})
        assert r.status_code == 200, r.text
        assert r.json()["items"] == [] and "next" not in r.json()


def test_a_new_version_keeps_the_patients_mask(dossier: Dossier) -> None:
    v1 = dossier.add("doctor", "57833-6", "Ordonnance")
    assert dossier.patch("patient", v1, {"masked_from_professionals": True}).status_code == 200
    v2 = dossier.add("doctor", "57833-6", "Ordonnance, nouvelle version", replaces=v1)
    assert "MASQUE_PS" in dossier.get("doctor", f"/documents/{v2}").json()["confidentiality"]
    refused(dossier.get("pharmacist", f"/documents/{v2}"), 403)
    assert dossier.get("pharmacist", "/documents").json()["items"] == []


def test_closing_on_29_february(clock: RunningStack) -> None:
    dossier = Dossier(clock)
    leap_day = datetime(2028, 2, 29, 10, 0, tzinfo=UTC)
    clock.set_clock_offset((leap_day - datetime.now(UTC)).total_seconds())
    token = clock.login(
        "patient", dossier.ins, dossier.patient["password"], dossier.patient["email"]
    )["access_token"]
    with clock.client(token) as c:
        r = c.post(f"/v1/dossiers/{dossier.ins}/close")
        assert r.status_code == 200, r.text
        assert r.json()["closed_at"].startswith("2028-02-29")
        assert c.post(f"/v1/dossiers/{dossier.ins}/reopen").status_code == 200


async def test_documents_hidden_from_representatives_are_reminded_and_revealed(
    clock: RunningStack,
) -> None:
    stack = clock
    admin = stack.admin_token()
    parent = stack.create_patient(admin)
    doctor = stack.create_professional(admin, "10")
    minor = stack.create_patient(admin, legal_representatives=[parent["ins"]])
    ins = minor["ins"]

    def token(who: dict[str, Any], kind: str = "patient") -> str:
        login = who["ins"] if kind == "patient" else who["rpps"]
        return str(stack.login(kind, login, who["password"], who["email"])["access_token"])

    stack.open_dossier(token(doctor, "professional"), minor)
    with stack.client(token(doctor, "professional")) as c:
        ids = []
        for title, hide in (("Pour les parents plus tard", {}), ("Pour tous plus tard", True)):
            r = c.post(
                f"/v1/dossiers/{ins}/documents",
                json={
                    "type_code": "11488-4",
                    "title": title,
                    "mime_type": "text/plain",
                    "content_base64": base64.b64encode(b"x").decode(),
                    "hidden_from_legal_representatives": True,
                    "hidden_from_patient": hide is True,
                },
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        # Revealing to the patient leaves the representatives' label in place.
        r = c.patch(f"/v1/dossiers/{ins}/documents/{ids[1]}", json={"hidden_from_patient": False})
        assert r.status_code == 200, r.text
        assert r.json()["confidentiality"] == ["INVISIBLE_REPRESENTANTS_LEGAUX"]

    def parent_sees() -> list[str]:
        with stack.client(token(parent)) as c:
            r = c.get(f"/v1/dossiers/{ins}/documents")
        assert r.status_code == 200, r.text
        return sorted(d["id"] for d in r.json()["items"])

    assert parent_sees() == []
    stack.set_clock_offset(15 * DAY)
    reminders = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "document.reminder_due",
        lambda seen: {e.reminder_due.document_id for e in seen} >= set(ids),
    )
    told = {
        (e.reminder_due.document_id, e.reminder_due.label)
        for e in reminders
        if e.reminder_due.document_id in ids
    }
    assert told == {(i, "INVISIBLE_REPRESENTANTS_LEGAUX") for i in ids}
    assert parent_sees() == []
    stack.set_clock_offset(31 * DAY)
    assert until(lambda: parent_sees() == sorted(ids)), "after a month, visible to them too"


def test_who_opens_a_dmp(stack: RunningStack) -> None:
    """Rule 1: the patient, their GP, a pharmacist, a self-employed nurse, an insurance agent.
    The GP is the one the insurer's registry says was declared, when it says one; a nurse's
    mode of practice is the directory's."""
    admin = stack.admin_token()
    gp = stack.create_professional(admin, "10")
    other_doctor = stack.create_professional(admin, "10")
    liberal_nurse = stack.create_professional(admin, "60", practice="liberal")
    salaried_nurse = stack.create_professional(admin, "60", practice="salaried")
    unknown_nurse = stack.create_professional(admin, "60")
    physio = stack.create_professional(admin, "70", practice="liberal")

    def token(pro: dict[str, Any]) -> str:
        return str(
            stack.login("professional", pro["rpps"], pro["password"], pro["email"])["access_token"]
        )

    def patient(declared_gp: str | None = None) -> dict[str, Any]:
        ins = make_ins()
        body = {
            "ins": ins,
            "vitale_serial": "12345678",
            "given_name": "Camille",
            "family_name": "Martin",
            "birth_date": "1984-05-17",
            "email": f"patient-{ins}@example.org",
            **({"declared_gp": declared_gp} if declared_gp else {}),
        }
        with stack.client(admin) as c:
            r = c.post("/v1/admin/patients", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["declared_gp"] == declared_gp
        return body

    def opening(pro: dict[str, Any], who: dict[str, Any]) -> Any:
        with stack.client(token(pro)) as c:
            return c.post(
                "/v1/dossiers",
                json={"ins": who["ins"], "vitale_serial": "12345678", "patient_consent": True},
            )

    followed = patient(declared_gp=gp["rpps"])
    r = opening(other_doctor, followed)
    refused(r, 403)
    assert "not_attending_physician" in r.json()["detail"]
    assert opening(gp, followed).status_code == 201
    # Once it is open, that doctor still learns nothing of it: the same refusal, not a 409.
    r = opening(other_doctor, followed)
    refused(r, 403)
    assert "not_attending_physician" in r.json()["detail"]
    refused(opening(gp, followed), 409)
    # No GP declared: the platform cannot tell, any doctor opens (README: rules at their edges).
    assert opening(other_doctor, patient()).status_code == 201
    for nurse in (salaried_nurse, unknown_nurse):
        r = opening(nurse, patient())
        refused(r, 403)
        assert "not_self_employed" in r.json()["detail"]
    assert opening(liberal_nurse, patient()).status_code == 201
    refused(opening(physio, patient()), 403)
    with stack.client(admin) as c:
        bad = {**patient(), "ins": make_ins(), "declared_gp": "12345678901"}
        r = c.post("/v1/admin/patients", json=bad)
        refused(r, 422)
        assert r.json()["field"] == "declared_gp"
        pro = {"rpps": "10000000007", "profession": "60", "given_name": "A", "family_name": "B"}
        r = c.post("/v1/admin/professionals", json={**pro, "practice": "freelance"})
        refused(r, 422)
        assert r.json()["field"] == "practice"


async def test_a_blocked_gp_is_not_told_of_an_emergency_access(
    stack: RunningStack, dossier: Dossier
) -> None:
    dossier.set_pro("gp", "blocked")
    with dossier.client("outsider") as c:
        r = c.post(
            f"/v1/dossiers/{dossier.ins}/emergency-access",
            json={"reason": "Patient inconscient aux urgences", "mode": "break_glass"},
        )
        assert r.status_code in (200, 201), r.text
    events = await collect_events(
        stack.infra.nats.url,
        "CONSENT",
        "consent.break_glass",
        lambda seen: any(e.patient_ins == dossier.ins for e in seen),
    )
    glass = [e for e in events if e.patient_ins == dossier.ins]
    assert [e.emergency_access_granted.attending_physician_rpps for e in glass] == [""]
    with dossier.client("patient") as c:
        assert until(
            lambda: any(
                n["kind"] == "emergency_access"
                for n in c.get("/v1/me/notifications").json()["items"]
            )
        ), "the patient is told"
    with dossier.client("gp") as c:
        kinds = [n["kind"] for n in c.get("/v1/me/notifications").json()["items"]]
    assert "emergency_access" not in kinds
