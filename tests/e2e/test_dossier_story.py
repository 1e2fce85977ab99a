"""Issue 3's story, through the gateway: every party's view of one patient's record."""

from __future__ import annotations

import base64
import time
from collections import Counter
from typing import Any

import pytest

from dmp.events.v1 import envelope_pb2
from dmp_stack.testing import RunningStack, collect_events, make_ins

PROBLEM = "application/problem+json"


def problem(r: Any, status: int, slug: str | None = None, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    if slug:
        assert r.json()["type"].endswith("/" + slug), r.json()
    if field:
        assert r.json()["field"] == field


class Cast:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.admin = stack.admin_token()
        self.patient = stack.create_patient(self.admin)
        self.ins = self.patient["ins"]
        pros = {
            "gp": "10",
            "pharmacist": "21",
            "nurse": "60",
            "emergency": "10",
            "radiologist": "10",
        }
        self.pros = {
            name: stack.create_professional(self.admin, code) for name, code in pros.items()
        }
        self.tokens = {"patient": self.token(self.patient, "patient", "ins")}
        for name, pro in self.pros.items():
            self.tokens[name] = self.token(pro, "professional", "rpps")

    def token(self, who: dict[str, Any], kind: str, key: str) -> str:
        return str(self.stack.login(kind, who[key], who["password"], who["email"])["access_token"])

    def client(self, who: str) -> Any:
        return self.stack.client(self.tokens[who])

    def rpps(self, who: str) -> str:
        return str(self.pros[who]["rpps"])


@pytest.fixture(scope="module")
def cast(stack: RunningStack) -> Cast:
    """The cast once the story is told: the tests below start where it ends (an open DMP, its
    care team, its documents), in whatever order they run."""
    cast = Cast(stack)
    the_story(stack, cast)
    return cast


def add(cast: Cast, who: str, type_code: str, title: str, **extra: Any) -> dict[str, Any]:
    body = {
        "type_code": type_code,
        "title": title,
        "mime_type": "text/plain",
        "content_base64": base64.b64encode(f"{title} — contenu".encode()).decode(),
        **extra,
    }
    with cast.client(who) as c:
        r = c.post(f"/v1/dossiers/{cast.ins}/documents", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def pending(cast: Cast, who: str) -> int:
    """How many documents the list says await their announcement."""
    with cast.client(who) as c:
        r = c.get(f"/v1/dossiers/{cast.ins}/documents")
    assert r.status_code == 200, r.text
    return int(r.json()["pending"])


def titles(cast: Cast, who: str) -> list[str]:
    with cast.client(who) as c:
        r = c.get(f"/v1/dossiers/{cast.ins}/documents")
    assert r.status_code == 200, r.text
    return sorted(d["title"] for d in r.json()["items"])


def until(check: Any, timeout: float = 15) -> Any:
    """Consent learns of a new dossier from its event, a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_the_story(stack: RunningStack) -> None:
    """Told to a cast of its own: its exact lists are not those of a dossier other tests wrote
    to first."""
    the_story(stack, Cast(stack))


def the_story(stack: RunningStack, cast: Cast) -> None:
    ins = cast.ins
    # The patient opens the DMP, with their consent and Vitale serial.
    with cast.client("patient") as c:
        problem(
            c.post(
                "/v1/dossiers",
                json={"ins": ins, "vitale_serial": "00000000", "patient_consent": True},
            ),
            422,
            "vitale-mismatch",
            "vitale_serial",
        )
        problem(
            c.post(
                "/v1/dossiers",
                json={
                    "ins": ins,
                    "vitale_serial": cast.patient["vitale_serial"],
                    "patient_consent": False,
                },
            ),
            422,
            "consent-required",
        )
        r = c.post(
            "/v1/dossiers",
            json={
                "ins": ins,
                "vitale_serial": cast.patient["vitale_serial"],
                "patient_consent": True,
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "open" and r.json()["opened_by"] == ins
        problem(
            c.post(
                "/v1/dossiers",
                json={
                    "ins": ins,
                    "vitale_serial": cast.patient["vitale_serial"],
                    "patient_consent": True,
                },
            ),
            409,
        )
        # Names a GP, authorises a pharmacist, blocks a nurse.
        assert until(
            lambda: c.put(
                f"/v1/dossiers/{ins}/attending-physician", json={"rpps": cast.rpps("gp")}
            ).status_code
            == 200
        )
        assert (
            c.put(
                f"/v1/dossiers/{ins}/professionals/{cast.rpps('pharmacist')}",
                json={"status": "authorized"},
            ).status_code
            == 200
        )
        assert (
            c.put(
                f"/v1/dossiers/{ins}/professionals/{cast.rpps('nurse')}", json={"status": "blocked"}
            ).status_code
            == 200
        )
        team = c.get(f"/v1/dossiers/{ins}/professionals").json()
        assert [m["rpps"] for m in team["blocked"]] == [cast.rpps("nurse")]

    # Documents arrive.
    bio = add(cast, "gp", "11502-2", "Bilan sanguin")
    add(cast, "radiologist", "18748-4", "IRM du genou")
    delivery = add(cast, "pharmacist", "60593-1", "Dispensation")
    hidden = add(cast, "gp", "11488-4", "Annonce diagnostic", hidden_from_patient=True)
    personal = add(cast, "patient", "DOC_PATIENT", "Mon carnet")
    assert bio["section"] == "analyses" and bio["size"] == len("Bilan sanguin — contenu".encode())
    assert hidden["confidentiality"] == ["INVISIBLE_PATIENT"] and hidden["hidden_from_patient"]

    # The patient masks the imaging report from professionals.
    with cast.client("patient") as c:
        imaging = next(
            d
            for d in c.get(f"/v1/dossiers/{ins}/documents").json()["items"]
            if d["type_code"] == "18748-4"
        )
        r = c.patch(
            f"/v1/dossiers/{ins}/documents/{imaging['id']}",
            json={"masked_from_professionals": True},
        )
        assert r.status_code == 200 and r.json()["masked_from_professionals"]

    everything = [
        "Annonce diagnostic",
        "Bilan sanguin",
        "Dispensation",
        "IRM du genou",
        "Mon carnet",
    ]
    assert titles(cast, "patient") == [
        "Bilan sanguin",
        "Dispensation",
        "IRM du genou",
        "Mon carnet",
    ]
    assert titles(cast, "gp") == everything  # masked and hidden included (rule 6)
    # The patient learns that one awaits its announcement, and nothing else of it.
    assert pending(cast, "patient") == 1 and pending(cast, "gp") == 0
    assert titles(cast, "pharmacist") == ["Bilan sanguin", "Dispensation"]  # matrix (rule 4)
    assert titles(cast, "radiologist") == ["IRM du genou"]  # the author sees their own
    with cast.client("nurse") as c:  # blocked (rule 5)
        problem(c.get(f"/v1/dossiers/{ins}/documents"), 403, "access-denied")
        problem(c.get(f"/v1/dossiers/{ins}/documents/{bio['id']}"), 403)
    with cast.client("emergency") as c:
        problem(c.get(f"/v1/dossiers/{ins}"), 403, "access-denied")
        problem(
            c.post(f"/v1/dossiers/{ins}/emergency-access", json={"reason": "urgent"}),
            422,
            field="reason",
        )
        r = c.post(
            f"/v1/dossiers/{ins}/emergency-access",
            json={"reason": "Patient inconscient aux urgences", "mode": "break_glass"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["expires_at"] > r.json()["granted_at"]
    # Break-glass: the matrix of a doctor, but masked stays masked (rule 9).
    assert titles(cast, "emergency") == [
        "Annonce diagnostic",
        "Bilan sanguin",
        "Dispensation",
        "Mon carnet",
    ]

    # Content, encrypted at rest, comes back intact.
    with cast.client("pharmacist") as c:
        r = c.get(f"/v1/dossiers/{ins}/documents/{bio['id']}/content")
        assert r.status_code == 200 and r.text == "Bilan sanguin — contenu"
        assert "sandbox" in r.headers["content-security-policy"]

    # The author reveals; nobody hides again (rule 8).
    with cast.client("patient") as c:
        problem(c.get(f"/v1/dossiers/{ins}/documents/{hidden['id']}"), 403)
        problem(
            c.patch(
                f"/v1/dossiers/{ins}/documents/{hidden['id']}", json={"hidden_from_patient": False}
            ),
            403,
        )
    with cast.client("gp") as c:
        r = c.patch(
            f"/v1/dossiers/{ins}/documents/{hidden['id']}", json={"hidden_from_patient": False}
        )
        assert r.status_code == 200 and not r.json()["hidden_from_patient"]
        problem(
            c.patch(
                f"/v1/dossiers/{ins}/documents/{hidden['id']}", json={"hidden_from_patient": True}
            ),
            409,
            "cannot-rehide",
        )
    assert "Annonce diagnostic" in titles(cast, "patient")
    assert pending(cast, "patient") == 0

    # A new version supersedes the old; deletion is the author's alone.
    replaced = add(cast, "pharmacist", "60593-1", "Dispensation v2", replaces=delivery["id"])
    assert replaced["replaces"] == delivery["id"]
    with cast.client("pharmacist") as c:
        old = c.get(f"/v1/dossiers/{ins}/documents/{delivery['id']}").json()
        assert old["status"] == "superseded" and old["replaced_by"] == replaced["id"]
    with cast.client("patient") as c:
        problem(c.delete(f"/v1/dossiers/{ins}/documents/{bio['id']}"), 403, "author-only")
        assert c.delete(f"/v1/dossiers/{ins}/documents/{personal['id']}").status_code == 204
        dossier = c.get(f"/v1/dossiers/{ins}").json()
    assert dossier["counts"] == {
        "analyses": 1,
        "comptes_rendus": 1,
        "imagerie": 1,
        "traitements": 1,
    }

    # Closing: nobody but the patient reads; reopening restores (rule 13).
    with cast.client("patient") as c:
        assert c.post(f"/v1/dossiers/{ins}/close").json()["status"] == "closed"
    with cast.client("gp") as c:
        problem(c.get(f"/v1/dossiers/{ins}/documents"), 409, "dossier-closed")
    with cast.client("patient") as c:
        assert c.get(f"/v1/dossiers/{ins}").json()["status"] == "closed"
        assert c.post(f"/v1/dossiers/{ins}/reopen").json()["status"] == "open"
    assert titles(cast, "gp")


def test_bad_input(stack: RunningStack, cast: Cast) -> None:
    with cast.client("gp") as c:
        problem(c.get("/v1/dossiers/123"), 422, "invalid-ins", "ins")
        problem(c.get(f"/v1/dossiers/{make_ins()}/documents"), 404, "dossier-not-found")
        body = {
            "type_code": "NOPE",
            "title": "x",
            "mime_type": "text/plain",
            "content_base64": "eA==",
        }
        problem(
            c.post(f"/v1/dossiers/{cast.ins}/documents", json=body),
            422,
            "unknown-type-code",
            "type_code",
        )
        problem(
            c.post(
                f"/v1/dossiers/{cast.ins}/documents",
                json={**body, "type_code": "11502-2", "content_base64": "%%%"},
            ),
            422,
            field="content_base64",
        )
        big = base64.b64encode(b"x" * (20 * 1024 * 1024 + 1)).decode()
        problem(
            c.post(
                f"/v1/dossiers/{cast.ins}/documents",
                json={**body, "type_code": "11502-2", "content_base64": big},
            ),
            413,
            "payload-too-large",
        )
        problem(c.get("/v1/admin/openings"), 403)
    with cast.client("pharmacist") as c:
        problem(
            c.put(
                f"/v1/dossiers/{cast.ins}/consent-settings",
                json={"allow_emergency_access": False, "allow_regulator_access": False},
            ),
            403,
        )
    with stack.client(cast.admin) as c:
        counts = c.get("/v1/admin/openings", params={"opener_kind": "patient"}).json()["counts"]
    assert {"opener": cast.ins, "opener_kind": "patient", "profession": "", "count": 1} in counts


async def test_every_change_is_an_event_and_first_access_is_told_once(
    stack: RunningStack, cast: Cast
) -> None:
    pharmacist = cast.rpps("pharmacist")

    def complete(seen: list[envelope_pb2.Envelope]) -> bool:
        """Everything asserted below has arrived: the outbox relays a dossier's listing records
        apart, so the replacement can come after the sixth addition."""
        theirs = [e for e in seen if e.patient_ins == cast.ins]
        kinds = Counter(e.type for e in theirs)
        return (
            kinds["document.added"] >= 6
            and kinds["document.replaced"] >= 1
            and kinds["dossier.opened"] >= 1
            and any(e.access_first.rpps == pharmacist for e in theirs if e.type == "access.first")
        )

    # Every subject, from the stream's start: late in a suite the stream holds tens of
    # thousands of events, each delivered to this reader (no server-side filter can help), so
    # it is given a minute, as the event contract's readers are, not the default 20 s.
    events = await collect_events(stack.infra.nats.url, "DOSSIER", ">", complete, wait=60)
    mine = [e for e in events if e.patient_ins == cast.ins]
    assert len({e.id for e in mine}) == len(mine)
    kinds = [e.type for e in mine]
    assert kinds.count("dossier.opened") == 1 and kinds.count("document.replaced") == 1
    firsts = [e.access_first.rpps for e in mine if e.type == "access.first"]
    assert sorted(firsts) == sorted(set(firsts)), "one access.first per professional"
    assert pharmacist in firsts and cast.rpps("nurse") not in firsts


async def test_profile_contacts_and_directives(stack: RunningStack, cast: Cast) -> None:
    ins = cast.ins
    profile = {
        "allergies": ["Pénicilline"],
        "chronic_conditions": ["Asthme"],
        "measurements": [
            {
                "kind": "blood_pressure",
                "value": "12/8",
                "unit": "cmHg",
                "measured_at": "2026-01-05T09:30:00Z",
            }
        ],
    }
    with cast.client("gp") as c:  # the care team keeps the medical profile
        r = c.put(f"/v1/dossiers/{ins}/profile", json=profile)
        assert r.status_code == 200, r.text
        assert r.json()["allergies"] == ["Pénicilline"]
        problem(c.put(f"/v1/dossiers/{ins}/emergency-contacts", json={"contacts": []}), 403)
        problem(
            c.put(
                f"/v1/dossiers/{ins}/profile",
                json={
                    "measurements": [
                        {
                            "kind": "glycaemia",
                            "value": "1.1",
                            "unit": "",
                            "measured_at": "2026-01-05T09:30:00Z",
                        }
                    ]
                },
            ),
            422,
            field="measurements.0.unit",
        )
    with cast.client("nurse") as c:  # blocked
        problem(c.get(f"/v1/dossiers/{ins}/profile"), 403)
    with cast.client("patient") as c:
        assert c.get(f"/v1/dossiers/{ins}/profile").json()["chronic_conditions"] == ["Asthme"]
        r = c.put(
            f"/v1/dossiers/{ins}/emergency-contacts",
            json={
                "contacts": [
                    {"name": "Paul Martin", "relationship": "frère", "phone": "+33611223344"}
                ]
            },
        )
        assert r.status_code == 200 and r.json()["contacts"][0]["name"] == "Paul Martin"
        problem(
            c.put(
                f"/v1/dossiers/{ins}/emergency-contacts",
                json={"contacts": [{"name": "Sans moyen"}]},
            ),
            422,
            field="contacts.0.phone",
        )
        assert c.get(f"/v1/dossiers/{ins}/advance-directives").json() is None
        first = c.put(f"/v1/dossiers/{ins}/advance-directives", json={"text": "Pas d'acharnement."})
        second = c.put(f"/v1/dossiers/{ins}/advance-directives", json={"text": "Version revue."})
        assert (first.json()["version"], second.json()["version"]) == (1, 2)
        assert c.get(f"/v1/dossiers/{ins}/advance-directives").json()["text"] == "Version revue."
    with cast.client("pharmacist") as c:
        problem(c.put(f"/v1/dossiers/{ins}/advance-directives", json={"text": "x"}), 403)
    # Each change above is an event (checked here, where they are made: a test of its own
    # found them only when it ran after this one).
    events = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "dossier.record_updated",
        lambda seen: sum(e.patient_ins == cast.ins for e in seen) >= 4,
    )
    records = [e.record_updated.record for e in events if e.patient_ins == cast.ins]
    assert records == ["profile", "emergency_contacts", "advance_directives", "advance_directives"]


def test_legal_representatives_of_a_minor(stack: RunningStack, cast: Cast) -> None:
    parent = stack.create_patient(cast.admin)
    stranger = stack.create_patient(cast.admin)
    minor_ins = make_ins()
    minor = {
        "ins": minor_ins,
        "vitale_serial": parent["vitale_serial"],
        "given_name": "Léo",
        "family_name": "Martin",
        "birth_date": "2015-03-02",
        "email": f"minor-{minor_ins}@example.org",
        "password": "minor password 1",
    }
    with stack.client(cast.admin) as c:
        for bad in ([minor_ins], [make_ins()], ["123"]):
            problem(
                c.post("/v1/admin/patients", json={**minor, "legal_representatives": bad}),
                422,
                field="legal_representatives.0",
            )
        r = c.post("/v1/admin/patients", json={**minor, "legal_representatives": [parent["ins"]]})
        assert r.status_code == 201, r.text
        assert r.json()["legal_representatives"] == [parent["ins"]]
    with cast.client("gp") as c:  # the GP opens the minor's DMP with the Vitale card
        r = c.post(
            "/v1/dossiers",
            json={
                "ins": minor_ins,
                "vitale_serial": minor["vitale_serial"],
                "patient_consent": True,
            },
        )
        assert r.status_code == 201, r.text
        for title, hide in (("Vaccins", False), ("Consultation confidentielle", True)):
            r = c.post(
                f"/v1/dossiers/{minor_ins}/documents",
                json={
                    "type_code": "11488-4",
                    "title": title,
                    "mime_type": "text/plain",
                    "content_base64": base64.b64encode(title.encode()).decode(),
                    "hidden_from_legal_representatives": hide,
                },
            )
            assert r.status_code == 201, r.text
        secret_id = r.json()["id"]

    def listing(who: dict[str, Any]) -> list[str]:
        token = stack.login("patient", who["ins"], who["password"], who["email"])["access_token"]
        with stack.client(token) as c:
            r = c.get(f"/v1/dossiers/{minor_ins}/documents")
            if r.status_code != 200:
                return [str(r.status_code)]
            return sorted(d["title"] for d in r.json()["items"])

    assert listing(parent) == ["Vaccins"]
    assert listing(minor) == ["Consultation confidentielle", "Vaccins"]
    assert listing(stranger) == ["403"]
    token = stack.login("patient", parent["ins"], parent["password"], parent["email"])[
        "access_token"
    ]
    with stack.client(token) as c:
        problem(c.get(f"/v1/dossiers/{minor_ins}/documents/{secret_id}"), 403)
        settings = {"allow_emergency_access": True, "allow_regulator_access": False}
        assert until(
            lambda: c.put(f"/v1/dossiers/{minor_ins}/consent-settings", json=settings).status_code
            == 200
        )


def test_an_insurance_agent_opens_a_dmp_and_reads_nothing(stack: RunningStack, cast: Cast) -> None:
    login = f"agent.{make_ins()[-6:]}"
    with stack.client(cast.admin) as c:
        problem(
            c.post(
                "/v1/admin/agents",
                json={
                    "login": "Bad Name!",
                    "given_name": "A",
                    "family_name": "B",
                    "email": "a@b.fr",
                },
            ),
            422,
            field="login",
        )
        r = c.post(
            "/v1/admin/agents",
            json={
                "login": login,
                "given_name": "Agnès",
                "family_name": "Caisse",
                "email": f"{login}@cpam.example",
                "password": "agent password 1",
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["roles"] == ["insurance_agent"]
    patient = stack.create_patient(cast.admin)
    token = stack.login("agent", login, "agent password 1", f"{login}@cpam.example")["access_token"]
    with stack.client(token) as c:
        assert c.get("/v1/me").json()["kind"] == "agent"
        r = c.post(
            "/v1/dossiers",
            json={
                "ins": patient["ins"],
                "vitale_serial": patient["vitale_serial"],
                "patient_consent": True,
            },
        )
        assert r.status_code == 201, r.text
        opener = r.json()["opened_by"]
        problem(c.get(f"/v1/dossiers/{patient['ins']}"), 403)
        problem(c.get(f"/v1/dossiers/{patient['ins']}/documents"), 403)
        problem(c.post("/v1/admin/patients", json={}), 422)  # shape first…
        problem(
            c.post(
                "/v1/admin/patients",
                json={
                    "ins": make_ins(),
                    "vitale_serial": "12345678",
                    "given_name": "A",
                    "family_name": "B",
                    "birth_date": "1990-01-01",
                    "email": "x@example.org",
                },
            ),
            403,
        )  # …then no directory
    with stack.client(cast.admin) as c:
        counts = c.get("/v1/admin/openings", params={"opener_kind": "agent"}).json()["counts"]
    # this agent's openings (other tests' agents open DMPs on the same stack)
    assert [x["count"] for x in counts if x["opener"] == opener] == [1]


def test_a_read_whose_trace_cannot_be_stored_is_refused(stack: RunningStack, cast: Cast) -> None:
    """Rule 10, fail closed: no audit record on JetStream, no data."""
    with cast.client("gp") as c:
        doc_id = c.get(f"/v1/dossiers/{cast.ins}/documents").json()["items"][0]["id"]
        stack.infra.pause(stack.infra.nats)
        try:
            r = c.get(f"/v1/dossiers/{cast.ins}/documents/{doc_id}/content")
            problem(r, 503, "service-unavailable")
            problem(c.get(f"/v1/dossiers/{cast.ins}/documents"), 503)
        finally:
            stack.infra.resume(stack.infra.nats)
        assert until(
            lambda: c.get(f"/v1/dossiers/{cast.ins}/documents/{doc_id}").status_code == 200
        )
