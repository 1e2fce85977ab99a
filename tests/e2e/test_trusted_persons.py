"""Issue 19 §2 through the gateway: trusted persons and acting for someone.

A patient names other patients as trusted persons (read, or read and manage); each has access
once they accept, and loses it the moment the patient revokes it. Acting for the patient is
calling the dossier's routes with the patient's INS: consent decides as for the patient within
the scope; documents hidden from the patient, or kept from trusted persons, are never seen;
every trace names both people.
"""

from __future__ import annotations

from typing import Any

import pytest

from dmp_stack.testing import RunningStack, make_ins, until

PROBLEM = "application/problem+json"


def problem(r: Any, status: int, slug: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/" + slug), r.json()
    if field:
        assert r.json()["field"] == field, r.json()


class Cast:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = stack.admin_token()
        self.people = {
            name: stack.create_patient(admin)
            for name in ("patient", "reader", "manager", "stranger")
        }
        self.tokens = {name: stack.token_for(p, "patient") for name, p in self.people.items()}
        self.gp = stack.create_professional(admin, "10")
        self.tokens["gp"] = stack.token_for(self.gp, "professional")
        self.doctor = stack.create_professional(admin, "10")
        self.ins = self.people["patient"]["ins"]
        self.docs: dict[str, dict[str, Any]] = {}

    def client(self, who: str) -> Any:
        return self.stack.client(self.tokens[who])

    def of(self, who: str) -> str:
        return str(self.people[who]["ins"])


@pytest.fixture(scope="module")
def cast(stack: RunningStack) -> Cast:
    cast = Cast(stack)
    ins = cast.ins
    stack.open_dossier(cast.tokens["patient"], cast.people["patient"])
    with cast.client("patient") as c:
        assert until(
            lambda: c.put(
                f"/v1/dossiers/{ins}/attending-physician", json={"rpps": cast.gp["rpps"]}
            ).status_code
            == 200
        )
    add = stack.add_document
    cast.docs["biology"] = add(cast.tokens["gp"], ins, "11502-2", "Bilan sanguin")
    cast.docs["announcement"] = add(
        cast.tokens["gp"], ins, "11488-4", "Annonce", hidden_from_patient=True
    )
    cast.docs["private"] = add(cast.tokens["gp"], ins, "11488-4", "Consultation privée")
    with cast.client("patient") as c:
        r = c.patch(
            f"/v1/dossiers/{ins}/documents/{cast.docs['private']['id']}",
            json={"hidden_from_trusted_persons": True},
        )
        assert r.status_code == 200, r.text
        assert r.json()["hidden_from_trusted_persons"] is True
        assert "MASQUE_PROCHES" in r.json()["confidentiality"]
    return cast


def invite(cast: Cast, who: str, scope: str) -> dict[str, Any]:
    with cast.client("patient") as c:
        r = c.post(
            f"/v1/dossiers/{cast.ins}/trusted-persons", json={"ins": cast.of(who), "scope": scope}
        )
    assert r.status_code == 201, r.text
    return dict(r.json())


def accept(cast: Cast, who: str) -> None:
    with cast.client(who) as c:
        r = c.post(f"/v1/me/represented/{cast.ins}/accept")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"


@pytest.fixture(scope="module")
def trusted(cast: Cast) -> Cast:
    """The reader (read) and the manager (read and manage), both accepted."""
    invited = invite(cast, "reader", "read")
    assert invited["status"] == "invited" and invited["scope"] == "read"
    assert (invited["given_name"], invited["family_name"]) == ("Camille", "Martin")
    # Invited is not trusted: nothing of the space until they accept.
    with cast.client("reader") as c:
        problem(c.get(f"/v1/dossiers/{cast.ins}"), 403, "access-denied")
        mine = c.get("/v1/me/represented").json()["items"]
    assert [(m["ins"], m["relation"], m["status"]) for m in mine] == [
        (cast.ins, "trusted_person", "invited")
    ]
    # The invited person is told an invitation waits, never by whom nor anything of the space.
    with cast.client("reader") as c:

        def told() -> list[dict[str, Any]]:
            items = c.get("/v1/me/notifications").json()["items"]
            return [n for n in items if n["kind"] == "trusted_invitation"]

        assert until(lambda: len(told()) == 1, timeout=30)
        notice = told()[0]
        assert cast.ins not in notice["body"] and "Martin" not in notice["body"]
    accept(cast, "reader")
    invite(cast, "manager", "manage")
    accept(cast, "manager")
    return cast


def test_the_patient_sees_whom_they_trust(trusted: Cast) -> None:
    with trusted.client("patient") as c:
        items = c.get(f"/v1/dossiers/{trusted.ins}/trusted-persons").json()["items"]
    assert {(i["ins"], i["scope"], i["status"]) for i in items} == {
        (trusted.of("reader"), "read", "active"),
        (trusted.of("manager"), "manage", "active"),
    }
    assert all(i["accepted_at"] for i in items)
    with trusted.client("reader") as c:
        mine = c.get("/v1/me/represented").json()["items"]
    assert mine[0]["status"] == "active" and mine[0]["scope"] == "read"


def test_a_trusted_reader_reads_what_the_patient_reads_less_what_is_kept_from_them(
    trusted: Cast,
) -> None:
    ins, docs = trusted.ins, trusted.docs
    with trusted.client("reader") as c:
        assert c.get(f"/v1/dossiers/{ins}").status_code == 200
        listed = c.get(f"/v1/dossiers/{ins}/documents").json()
        ids = {d["id"] for d in listed["items"]}
        assert docs["biology"]["id"] in ids
        assert docs["announcement"]["id"] not in ids  # hidden from the patient
        assert docs["private"]["id"] not in ids  # kept from trusted persons
        assert listed["pending"] == 0  # the patient's count, not theirs
        r = c.get(f"/v1/dossiers/{ins}/documents/{docs['biology']['id']}/content")
        assert r.status_code == 200, r.text
        for key in ("private", "announcement"):
            r = c.get(f"/v1/dossiers/{ins}/documents/{docs[key]['id']}/content")
            assert r.status_code in (403, 404), r.text
        # Reading the patient's choices is reading.
        assert c.get(f"/v1/dossiers/{ins}/professionals").status_code == 200
        # Changing them is not.
        problem(
            c.put(
                f"/v1/dossiers/{ins}/professionals/{trusted.doctor['rpps']}",
                json={"status": "blocked"},
            ),
            403,
            "read-only",
        )
        content = "bm90ZQ=="
        problem(
            c.post(
                f"/v1/dossiers/{ins}/documents",
                json={
                    "type_code": "DOC_PATIENT",
                    "title": "Note",
                    "mime_type": "text/plain",
                    "content_base64": content,
                },
            ),
            403,
            "read-only",
        )


def test_a_trusted_manager_makes_the_patients_choices_but_not_the_space_itself(
    trusted: Cast,
) -> None:
    ins = trusted.ins
    with trusted.client("manager") as c:
        r = c.put(
            f"/v1/dossiers/{ins}/professionals/{trusted.doctor['rpps']}",
            json={"status": "authorized"},
        )
        assert r.status_code == 200, r.text
        r = c.post(
            f"/v1/dossiers/{ins}/documents",
            json={
                "type_code": "DOC_PATIENT",
                "title": "Ordonnance scannée",
                "mime_type": "text/plain",
                "content_base64": "b3Jkbw==",
            },
        )
        assert r.status_code == 201, r.text
        # A document only a professional writes stays theirs.
        r = c.post(
            f"/v1/dossiers/{ins}/documents",
            json={
                "type_code": "11488-4",
                "title": "Faux compte rendu",
                "mime_type": "text/plain",
                "content_base64": "eA==",
            },
        )
        assert r.status_code == 403, r.text
        # The space itself is the patient's.
        problem(c.post(f"/v1/dossiers/{ins}/close"), 403, "patient-only")
        problem(
            c.post(
                f"/v1/dossiers/{ins}/trusted-persons",
                json={"ins": trusted.of("stranger"), "scope": "read"},
            ),
            403,
            "patient-only",
        )
        problem(c.get(f"/v1/dossiers/{ins}/trusted-persons"), 403, "patient-only")
        problem(
            c.patch(
                f"/v1/dossiers/{ins}/documents/{trusted.docs['biology']['id']}",
                json={"hidden_from_trusted_persons": True},
            ),
            403,
            "patient-only",
        )
    with trusted.client("patient") as c:
        r = c.get(f"/v1/dossiers/{ins}")
        assert r.json()["status"] == "open"
        team = c.get(f"/v1/dossiers/{ins}/professionals").json()
        assert trusted.doctor["rpps"] in {m["rpps"] for m in team["authorized"]}


def test_every_trace_names_both_people(trusted: Cast) -> None:
    ins, reader = trusted.ins, trusted.of("reader")
    with trusted.client("reader") as c:
        assert (
            c.get(f"/v1/dossiers/{ins}/documents/{trusted.docs['biology']['id']}").status_code
            == 200
        )

    def traced() -> list[dict[str, Any]]:
        with trusted.client("patient") as c:
            entries = c.get(f"/v1/dossiers/{ins}/access-log", params={"page_size": 100}).json()
        return [
            e
            for e in entries["entries"]
            if (e.get("actor") or {}).get("id") == reader
            and e.get("document_id") == trusted.docs["biology"]["id"]
        ]

    assert until(lambda: bool(traced()), timeout=30)
    entry = traced()[0]
    assert entry["actor"]["kind"] == "patient"
    assert entry["on_behalf_of"] == ins
    assert entry["action"] == "read"
    # The entry's own bytes, which the log signs, carry both: the dossier and the actor.
    assert f'"ins":"{ins}"' in entry["entry"] and f'"id":"{reader}"' in entry["entry"]
    # The patient's own reads are not "on behalf".
    with trusted.client("patient") as c:
        c.get(f"/v1/dossiers/{ins}")
        own = c.get(f"/v1/dossiers/{ins}/access-log").json()["entries"]
    assert all("on_behalf_of" not in e for e in own if (e.get("actor") or {}).get("id") == ins)


def test_refusals_are_clear_and_change_nothing(trusted: Cast) -> None:
    ins = trusted.ins
    url = f"/v1/dossiers/{ins}/trusted-persons"
    with trusted.client("patient") as c:
        before = c.get(url).json()["items"]
        problem(
            c.post(url, json={"ins": ins, "scope": "read"}), 422, "invalid-trusted-person", "ins"
        )
        problem(c.post(url, json={"ins": make_ins(), "scope": "read"}), 422, "not-a-patient", "ins")
        problem(c.post(url, json={"ins": "123", "scope": "read"}), 422, "invalid-ins", "ins")
        problem(
            c.post(url, json={"ins": trusted.of("stranger"), "scope": "all"}),
            422,
            "validation-error",
            "scope",
        )
        problem(
            c.post(url, json={"ins": trusted.of("reader"), "scope": "manage"}),
            409,
            "already-trusted",
            "ins",
        )
        problem(
            c.patch(f"{url}/{trusted.of('stranger')}", json={"scope": "manage"}),
            404,
            "trusted-person-not-found",
        )
        assert c.get(url).json()["items"] == before
    with trusted.client("stranger") as c:
        problem(c.get(url), 403, "access-denied")
        problem(c.post(f"/v1/me/represented/{ins}/accept"), 404, "invitation-not-found")
        problem(c.delete(f"{url}/{trusted.of('reader')}"), 403, "access-denied")
        problem(c.get(f"/v1/dossiers/{ins}"), 403, "access-denied")
    with trusted.client("gp") as c:
        problem(
            c.post(url, json={"ins": trusted.of("stranger"), "scope": "read"}), 403, "access-denied"
        )
        problem(c.get("/v1/me/represented"), 403, "forbidden")


def test_five_trusted_persons_at_most(stack: RunningStack) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    token = stack.token_for(patient, "patient")
    stack.open_dossier(token, patient)
    others = [stack.create_patient(admin) for _ in range(6)]
    url = f"/v1/dossiers/{patient['ins']}/trusted-persons"
    with stack.client(token) as c:
        for other in others[:5]:
            r = c.post(url, json={"ins": other["ins"], "scope": "read"})
            assert r.status_code == 201, r.text
        problem(
            c.post(url, json={"ins": others[5]["ins"], "scope": "read"}),
            409,
            "too-many-trusted-persons",
        )
        assert len(c.get(url).json()["items"]) == 5


def test_scope_changes_and_revocation_hold_from_the_next_request(stack: RunningStack) -> None:
    admin = stack.admin_token()
    patient, friend = stack.create_patient(admin), stack.create_patient(admin)
    token, friend_token = stack.token_for(patient, "patient"), stack.token_for(friend, "patient")
    stack.open_dossier(token, patient)
    ins = patient["ins"]
    url = f"/v1/dossiers/{ins}/trusted-persons"
    rpps = stack.create_professional(admin, "10")["rpps"]
    with stack.client(token) as c, stack.client(friend_token) as f:
        assert c.post(url, json={"ins": friend["ins"], "scope": "read"}).status_code == 201
        assert f.post(f"/v1/me/represented/{ins}/accept").status_code == 200
        block = {"status": "blocked"}
        problem(f.put(f"/v1/dossiers/{ins}/professionals/{rpps}", json=block), 403, "read-only")
        r = c.patch(f"{url}/{friend['ins']}", json={"scope": "manage"})
        assert r.status_code == 200 and r.json()["scope"] == "manage", r.text
        assert f.put(f"/v1/dossiers/{ins}/professionals/{rpps}", json=block).status_code == 200
        assert c.delete(f"{url}/{friend['ins']}").status_code == 204
        problem(f.get(f"/v1/dossiers/{ins}"), 403, "access-denied")
        assert f.get("/v1/me/represented").json()["items"] == []
        # Invited again, the friend declines: the same route, their own INS.
        assert c.post(url, json={"ins": friend["ins"], "scope": "read"}).status_code == 201
        assert f.delete(f"{url}/{friend['ins']}").status_code == 204
        assert c.get(url).json()["items"] == []
        problem(f.post(f"/v1/me/represented/{ins}/accept"), 404, "invitation-not-found")


def test_a_closed_space_is_closed_to_trusted_persons(stack: RunningStack) -> None:
    admin = stack.admin_token()
    patient, friend = stack.create_patient(admin), stack.create_patient(admin)
    token, friend_token = stack.token_for(patient, "patient"), stack.token_for(friend, "patient")
    stack.open_dossier(token, patient)
    ins = patient["ins"]
    with stack.client(token) as c, stack.client(friend_token) as f:
        r = c.post(
            f"/v1/dossiers/{ins}/trusted-persons", json={"ins": friend["ins"], "scope": "manage"}
        )
        assert r.status_code == 201, r.text
        assert f.post(f"/v1/me/represented/{ins}/accept").status_code == 200
        assert f.get(f"/v1/dossiers/{ins}").status_code == 200
        assert c.post(f"/v1/dossiers/{ins}/close").status_code == 200
        problem(f.get(f"/v1/dossiers/{ins}"), 409, "dossier-closed")
        assert c.post(f"/v1/dossiers/{ins}/reopen").status_code == 200
        assert until(lambda: f.get(f"/v1/dossiers/{ins}").status_code == 200)


def test_legal_representatives_find_the_minor_they_act_for(stack: RunningStack) -> None:
    admin = stack.admin_token()
    parent = stack.create_patient(admin)
    minor = stack.create_patient(admin, legal_representatives=[parent["ins"]])
    parent_token = stack.token_for(parent, "patient")
    stack.open_dossier(stack.token_for(minor, "patient"), minor)
    with stack.client(parent_token) as c:

        def listed() -> list[Any]:
            return [
                (i["ins"], i["relation"], i["scope"], i["status"])
                for i in c.get("/v1/me/represented").json()["items"]
            ]

        assert until(
            lambda: listed() == [(minor["ins"], "legal_representative", "manage", "active")]
        )
        # The representative names the minor's trusted persons too.
        aunt = stack.create_patient(admin)
        r = c.post(
            f"/v1/dossiers/{minor['ins']}/trusted-persons",
            json={"ins": aunt["ins"], "scope": "read"},
        )
        assert r.status_code == 201, r.text
