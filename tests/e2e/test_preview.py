"""Issue 19 §4 through the gateway: "que voit le Dr X ?". For every kind of professional of the
story, the patient's preview holds exactly what that professional's own listing gives them, each
document they would not see says the rule that hides it, and the preview is never traced as the
professional's access."""

from __future__ import annotations

from typing import Any

import pytest

from dmp_gateway.routes.preview import Preview
from dmp_stack.testing import RunningStack, make_ins, make_rpps, until

PROBLEM = "application/problem+json"
# name → (profession code, relation to the patient's dossier, extra registration fields)
PROFESSIONALS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gp": ("10", "attending_physician", {}),
    "doctor": ("10", "authorized", {}),
    "stranger": ("10", "none", {}),
    "radiologist": ("10", "none", {}),
    "blocked": ("10", "blocked", {}),
    "nurse": ("60", "authorized", {}),
    "pharmacist": ("21", "authorized", {}),
    "emergency": ("10", "none", {}),
    "regulator": ("10", "none", {"roles": ["samu_regulator"]}),
    "unseen": ("10", "authorized", {}),  # previewed, never reads: their name stays off the trail
}


def problem(r: Any, status: int, slug: str | None = None, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    if slug:
        assert r.json()["type"].endswith("/" + slug), r.json()
    if field:
        assert r.json()["field"] == field, r.json()


class Cast:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.admin = stack.admin_token()
        self.patient = stack.create_patient(self.admin)
        self.ins = self.patient["ins"]
        self.pros = {
            name: stack.create_professional(self.admin, code, **extra)
            for name, (code, _, extra) in PROFESSIONALS.items()
        }
        self.tokens = {"patient": stack.token_for(self.patient, "patient")}
        for name, pro in self.pros.items():
            self.tokens[name] = stack.token_for(pro, "professional")
        self.docs: dict[str, dict[str, Any]] = {}

    def client(self, who: str) -> Any:
        return self.stack.client(self.tokens[who])

    def rpps(self, who: str) -> str:
        return str(self.pros[who]["rpps"])

    def add(self, who: str, key: str, type_code: str, title: str, **extra: Any) -> None:
        self.docs[key] = self.stack.add_document(
            self.tokens[who], self.ins, type_code, title, **extra
        )


def story(stack: RunningStack) -> Cast:
    """The story's dossier: a GP, a care team, a blocked doctor, documents of every kind —
    masked, hidden until their announcement, written by someone outside the care team."""
    cast = Cast(stack)
    ins = cast.ins
    stack.open_dossier(cast.tokens["patient"], cast.patient)
    with cast.client("patient") as c:
        assert until(
            lambda: c.put(
                f"/v1/dossiers/{ins}/attending-physician", json={"rpps": cast.rpps("gp")}
            ).status_code
            == 200
        )
        for name, (_, relation, _) in PROFESSIONALS.items():
            if relation in ("authorized", "blocked"):
                r = c.put(
                    f"/v1/dossiers/{ins}/professionals/{cast.rpps(name)}", json={"status": relation}
                )
                assert r.status_code == 200, r.text
    cast.add("gp", "biology", "11502-2", "Bilan sanguin")
    cast.add("gp", "announcement", "11488-4", "Annonce diagnostic", hidden_from_patient=True)
    cast.add("doctor", "discharge", "11490-0", "Lettre de sortie")
    cast.add("doctor", "consultation", "11488-4", "Consultation")
    cast.add("radiologist", "imaging", "18748-4", "IRM du genou")
    cast.add("pharmacist", "dispensation", "60593-1", "Dispensation")
    cast.add("patient", "personal", "DOC_PATIENT", "Mon carnet")
    cast.add("patient", "deleted", "DOC_PATIENT", "Brouillon")
    with cast.client("patient") as c:
        r = c.patch(
            f"/v1/dossiers/{ins}/documents/{cast.docs['imaging']['id']}",
            json={"masked_from_professionals": True},
        )
        assert r.status_code == 200, r.text
        r = c.delete(f"/v1/dossiers/{ins}/documents/{cast.docs['deleted']['id']}")
        assert r.status_code == 204, r.text
    return cast


@pytest.fixture(scope="module")
def cast(stack: RunningStack) -> Cast:
    """The story, shared by the module's tests (they read it, and only add to it)."""
    return story(stack)


@pytest.fixture
def own_story(stack: RunningStack) -> Cast:
    """The story, of this test's own: for a test that changes what the others' previews show."""
    return story(stack)


@pytest.fixture
def unread(stack: RunningStack) -> Cast:
    """The story, of this test's own: no professional has read it yet, whatever ran before."""
    return story(stack)


def preview(cast: Cast, who: str = "patient", ins: str | None = None, **viewer: str) -> Any:
    """Every page of the preview, as one: the viewer, visible, hidden, and the first page's
    pending counts."""
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {**viewer, "page_size": 2, **({"cursor": cursor} if cursor else {})}
        with cast.client(who) as c:
            r = c.get(f"/v1/dossiers/{ins or cast.ins}/preview", params=params)
        assert r.status_code == 200, r.text
        Preview.model_validate(r.json())  # the shape the OpenAPI document gives
        pages.append(r.json())
        cursor = r.json().get("next")
        if not cursor:
            break
    assert all(p["viewer"] == pages[0]["viewer"] for p in pages)
    assert "pending" in pages[0] and all("pending" not in p for p in pages[1:])
    return {
        "viewer": pages[0]["viewer"],
        "visible": [d for p in pages for d in p["visible"]],
        "hidden": [d for p in pages for d in p["hidden"]],
        "pending": pages[0]["pending"],
    }


def real_listing(cast: Cast, who: str) -> tuple[int, list[str]]:
    """The professional's own answer to `GET …/documents`, every page: status and ids."""
    ids: list[str] = []
    cursor = None
    while True:
        with cast.client(who) as c:
            r = c.get(
                f"/v1/dossiers/{cast.ins}/documents",
                params={"page_size": 3, **({"cursor": cursor} if cursor else {})},
            )
        if r.status_code != 200:
            assert r.headers["content-type"] == PROBLEM
            return r.status_code, ids
        ids += [d["id"] for d in r.json()["items"]]
        cursor = r.json().get("next")
        if not cursor:
            return 200, ids


def trail(cast: Cast) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        with cast.client("patient") as c:
            r = c.get(
                f"/v1/dossiers/{cast.ins}/access-log",
                params={"page_size": 100, **({"cursor": cursor} if cursor else {})},
            )
        assert r.status_code == 200, r.text
        entries += r.json()["entries"]
        cursor = r.json().get("next")
        if not cursor:
            return entries


def reasons(seen: dict[str, Any], cast: Cast) -> dict[str, str]:
    """Hidden documents by key, with their reasons."""
    keys = {d["id"]: key for key, d in cast.docs.items()}
    return {keys[h["document_id"]]: h["reason"] for h in seen["hidden"]}


def visible(seen: dict[str, Any], cast: Cast) -> set[str]:
    keys = {d["id"]: key for key, d in cast.docs.items()}
    return {keys[d["id"]] for d in seen["visible"]}


def test_a_preview_is_the_patients_action_never_the_professionals(unread: Cast) -> None:
    """Before any professional reads, the patient previews them all: the trail then holds the
    patient's previews, and no read or search in any professional's name."""
    cast = unread
    previews = {name: preview(cast, rpps=cast.rpps(name)) for name in PROFESSIONALS}
    for name, (code, relation, _) in PROFESSIONALS.items():
        viewer = previews[name]["viewer"]
        assert viewer["rpps"] == cast.rpps(name) and viewer["profession"] == code
        assert viewer["relation"] == relation, (name, viewer)
        assert viewer["family_name"] == "Durand" and viewer["profession_label"]
    rpps = {cast.rpps(name) for name in PROFESSIONALS}

    def previews_traced() -> list[dict[str, Any]]:
        found = [e for e in trail(cast) if (e.get("query") or "").startswith("preview:")]
        return found if len(found) >= len(PROFESSIONALS) else []

    traced = until(previews_traced)
    assert traced, "the previews reached the trail"
    assert all(e["actor"]["kind"] == "patient" and e["actor"]["id"] == cast.ins for e in traced)
    assert all(e["action"] == "search" and e["outcome"] == "success" for e in traced)
    # (An entry naming the document hidden from the patient shows them no actor: its creation.)
    named = [e for e in trail(cast) if not e["withheld"]]
    reads = [e for e in named if e["actor"]["id"] in rpps and e["action"] != "create"]
    assert reads == [], reads


def compare(cast: Cast, name: str, viewer: dict[str, str] | None = None) -> dict[str, Any]:
    """The preview of `name` (or of `viewer`) against `name`'s own listing: the same documents,
    save those not yet announced to the patient, which the preview counts and does not name."""
    seen = preview(cast, **(viewer or {"rpps": cast.rpps(name)}))
    status, real = real_listing(cast, name)
    with cast.client("patient") as c:
        r = c.get(f"/v1/dossiers/{cast.ins}/documents", params={"page_size": 200})
    mine, pending = [d["id"] for d in r.json()["items"]], r.json()["pending"]
    shown = [d["id"] for d in seen["visible"]]
    announced_later = [i for i in real if i not in mine]
    assert [i for i in real if i in mine] == shown, (name, seen, real)
    assert seen["pending"]["visible"] == len(announced_later)
    assert seen["pending"]["visible"] + seen["pending"]["hidden"] == pending
    if status != 200:  # refused outright: the preview says why, and shows nothing
        assert not real and not shown and not seen["viewer"]["access"]["allowed"]
    # What the patient reads, the preview sorts in two; nothing else.
    assert sorted(shown + [h["document_id"] for h in seen["hidden"]]) == sorted(mine)
    assert all(h["explanation"] for h in seen["hidden"])
    return {"status": status, **seen}


def test_the_attending_physician_sees_everything(cast: Cast) -> None:
    seen = compare(cast, "gp")
    assert visible(seen, cast) == {
        "biology",
        "discharge",
        "consultation",
        "imaging",
        "dispensation",
        "personal",
    }
    assert seen["viewer"]["access"]["reason"] == "attending_physician"


def test_an_authorised_doctor_sees_all_but_the_masked(cast: Cast) -> None:
    seen = compare(cast, "doctor")
    assert reasons(seen, cast) == {"imaging": "masked"}
    assert seen["viewer"]["access"] == {
        "allowed": True,
        "mode": "normal",
        "reason": "care_team",
        "explanation": seen["viewer"]["access"]["explanation"],
    }


def test_a_nurse_and_a_pharmacist_see_what_the_matrix_allows(cast: Cast) -> None:
    nurse = compare(cast, "nurse")
    assert reasons(nurse, cast) == {
        "imaging": "masked",
        "consultation": "not_habilitated",
        "personal": "not_habilitated",
    }
    pharmacist = compare(cast, "pharmacist")
    assert reasons(pharmacist, cast) == {
        "imaging": "masked",
        "consultation": "not_habilitated",
        "discharge": "not_habilitated",
        "personal": "not_habilitated",
    }
    assert any("matrice" in h["explanation"] for h in pharmacist["hidden"])


def test_outside_the_care_team_only_ones_own_documents(cast: Cast) -> None:
    stranger = compare(cast, "stranger")
    assert stranger["status"] == 403 and not stranger["visible"]
    assert set(reasons(stranger, cast).values()) == {"not_in_care_team"}
    assert stranger["viewer"]["access"]["reason"] == "not_in_care_team"
    # The author of a masked document still reads it, outside the care team.
    radiologist = compare(cast, "radiologist")
    assert visible(radiologist, cast) == {"imaging"}
    assert radiologist["visible"][0]["reason"] == "author"


def test_a_blocked_professional_sees_nothing(cast: Cast) -> None:
    seen = compare(cast, "blocked")
    assert seen["status"] == 403 and set(reasons(seen, cast).values()) == {"blocked"}
    assert seen["viewer"]["relation"] == "blocked"
    assert "bloqué" in seen["viewer"]["access"]["explanation"]


def test_a_profession_alone_has_no_authorisation(cast: Cast) -> None:
    """`?profession=`: any nurse the patient has not authorised — compared with such a nurse's
    own listing, by code or by name."""
    newcomer = cast.stack.create_professional(cast.admin, "60")
    cast.pros["newcomer"] = newcomer
    cast.tokens["newcomer"] = cast.stack.token_for(newcomer, "professional")
    for given in ("infirmier", "Infirmier", "60"):
        seen = compare(cast, "newcomer", {"profession": given})
        assert seen["status"] == 403
        assert seen["viewer"] == {
            "profession": "60",
            "profession_label": "Infirmier",
            "relation": "none",
            "access": seen["viewer"]["access"],
        }
        assert set(reasons(seen, cast).values()) == {"not_in_care_team"}
    seen = preview(cast, profession="pharmacien")
    assert seen["viewer"]["profession"] == "21" and not seen["visible"]


def test_emergency_access_shows_as_it_reads_masked_stays_masked(cast: Cast) -> None:
    for name, mode, reason in (
        ("emergency", "break_glass", "Patient inconscient aux urgences"),
        ("regulator", "regulator", "Appel au 15, douleur thoracique"),
    ):
        assert compare(cast, name)["status"] == 403  # before: not in the care team
        with cast.client(name) as c:
            r = c.post(
                f"/v1/dossiers/{cast.ins}/emergency-access", json={"reason": reason, "mode": mode}
            )
            assert r.status_code == 201, r.text
        seen = compare(cast, name)
        assert seen["status"] == 200 and seen["viewer"]["access"]["mode"] == mode
        assert reasons(seen, cast) == {"imaging": "masked"}
        assert {d["mode"] for d in seen["visible"]} == {mode}


def test_a_document_revealed_to_the_patient_joins_the_preview(own_story: Cast) -> None:
    cast = own_story
    before = preview(cast, rpps=cast.rpps("doctor"))
    assert before["pending"] == {"visible": 1, "hidden": 0}
    pharmacist = preview(cast, rpps=cast.rpps("pharmacist"))
    assert pharmacist["pending"] == {"visible": 0, "hidden": 1}
    with cast.client("gp") as c:
        r = c.patch(
            f"/v1/dossiers/{cast.ins}/documents/{cast.docs['announcement']['id']}",
            json={"hidden_from_patient": False},
        )
        assert r.status_code == 200, r.text
    after = compare(cast, "doctor")
    assert after["pending"] == {"visible": 0, "hidden": 0} and "announcement" in visible(
        after, cast
    )
    assert reasons(preview(cast, rpps=cast.rpps("pharmacist")), cast)["announcement"] == (
        "not_habilitated"
    )


def test_only_the_patient_previews(stack: RunningStack, cast: Cast) -> None:
    url = f"/v1/dossiers/{cast.ins}/preview"
    for name in ("gp", "doctor", "stranger"):
        with cast.client(name) as c:
            problem(c.get(url, params={"rpps": cast.rpps("nurse")}), 403)
    other = stack.create_patient(cast.admin)
    with stack.client(stack.token_for(other, "patient")) as c:
        problem(c.get(url, params={"profession": "60"}), 403)
    with stack.client(cast.admin) as c:
        problem(c.get(url, params={"profession": "60"}), 403)
    with stack.client() as c:
        problem(c.get(url, params={"profession": "60"}), 401)


def test_bad_requests_name_the_parameter(cast: Cast) -> None:
    url = f"/v1/dossiers/{cast.ins}/preview"
    with cast.client("patient") as c:
        problem(c.get(url), 422, "validation-error", "rpps")
        problem(c.get(url, params={"rpps": cast.rpps("gp"), "profession": "60"}), 422, field="rpps")
        problem(c.get(url, params={"rpps": "12345678901"}), 422, "invalid-rpps", "rpps")
        problem(c.get(url, params={"rpps": make_rpps()}), 422, "validation-error", "rpps")
        problem(
            c.get(url, params={"profession": "astronaute"}), 422, "invalid-profession", "profession"
        )
        bad_size = {"profession": "60", "page_size": 0}
        problem(c.get(url, params=bad_size), 422, field="query.page_size")
        problem(c.get(url, params={"profession": "60", "cursor": "abc"}), 422, field="cursor")
        problem(c.get("/v1/dossiers/123/preview", params={"profession": "60"}), 422, "invalid-ins")
        problem(c.get(f"/v1/dossiers/{make_ins()}/preview", params={"profession": "60"}), 404)


def test_legal_representatives_preview_a_minors_dossier(stack: RunningStack, cast: Cast) -> None:
    """A parent previews as the minor would, less what is hidden from representatives: that
    is counted, never named."""
    parent = stack.create_patient(cast.admin)
    minor = stack.create_patient(cast.admin, legal_representatives=[parent["ins"]])
    tokens = {
        "parent": stack.token_for(parent, "patient"),
        "minor": stack.token_for(minor, "patient"),
    }
    stack.open_dossier(tokens["minor"], minor)
    titles = {}
    for title, hidden in (("Vaccins", False), ("Consultation confidentielle", True)):
        added = stack.add_document(
            cast.tokens["gp"],
            minor["ins"],
            "87273-9",
            title,
            hidden_from_legal_representatives=hidden,
        )
        titles[added["id"]] = title

    def of(who: str) -> dict[str, Any]:
        with stack.client(tokens[who]) as c:
            r = c.get(f"/v1/dossiers/{minor['ins']}/preview", params={"rpps": cast.rpps("gp")})
        assert r.status_code == 200, r.text
        return dict(r.json())

    seen = until(lambda: (lambda p: p if p["visible"] else None)(of("parent")))
    assert seen, "consent heard of the minor's dossier"
    assert [titles[d["id"]] for d in seen["visible"]] == ["Vaccins"]  # the author's own
    assert seen["pending"] == {"visible": 1, "hidden": 0} and seen["hidden"] == []
    mine = of("minor")
    assert sorted(titles[d["id"]] for d in mine["visible"]) == sorted(titles.values())
    assert mine["pending"] == {"visible": 0, "hidden": 0}


def test_a_closed_dossier_is_shown_closed_to_everyone(cast: Cast) -> None:
    with cast.client("patient") as c:
        assert c.post(f"/v1/dossiers/{cast.ins}/close").status_code == 200
    seen = preview(cast, rpps=cast.rpps("gp"))
    assert not seen["visible"] and set(reasons(seen, cast).values()) == {"dossier_closed"}
    assert real_listing(cast, "gp") == (409, [])
    with cast.client("patient") as c:
        assert c.post(f"/v1/dossiers/{cast.ins}/reopen").status_code == 200
