"""Rule 13's purge through the gateway, on the injected clock: a DMP opened again for the same
INS after a purge inherits nothing of the old one — no care team, no block, no emergency grant,
no inbox, no right to the old trace (docs/purge.md)."""

from __future__ import annotations

import base64
from typing import Any

from dmp_stack.testing import RunningStack, until

DAY = 86_400


class People:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = stack.admin_token()
        self.patient = stack.create_patient(admin)
        self.ins = self.patient["ins"]
        professions = {"gp": "10", "pharmacist": "21", "nurse": "60", "urgentist": "10"}
        self.pros = {
            name: stack.create_professional(admin, code) for name, code in professions.items()
        }

    def client(self, who: str) -> Any:
        """A client with a fresh token: the clock moves under this test."""
        if who == "patient":
            p = self.patient
            tokens = self.stack.login("patient", p["ins"], p["password"], p["email"])
        else:
            p = self.pros[who]
            tokens = self.stack.login("professional", p["rpps"], p["password"], p["email"])
        return self.stack.client(tokens["access_token"])

    def reads(self, who: str) -> int:
        with self.client(who) as c:
            return int(c.get(f"/v1/dossiers/{self.ins}/documents").status_code)

    def inbox_kinds(self) -> list[str]:
        with self.client("patient") as c:
            r = c.get("/v1/me/notifications", params={"page_size": 100})
        assert r.status_code == 200, r.text
        return [n["kind"] for n in r.json()["items"]]


def test_a_dmp_opened_again_after_a_purge_inherits_nothing(clock: RunningStack) -> None:
    stack = clock
    people = People(stack)
    ins = people.ins
    rpps = {name: pro["rpps"] for name, pro in people.pros.items()}

    with people.client("patient") as c:
        stack.open_dossier(c.headers["authorization"].removeprefix("Bearer "), people.patient)
        assert until(
            lambda: c.put(
                f"/v1/dossiers/{ins}/attending-physician", json={"rpps": rpps["gp"]}
            ).status_code
            == 200
        )
        for name, status in (("pharmacist", "authorized"), ("nurse", "blocked")):
            r = c.put(f"/v1/dossiers/{ins}/professionals/{rpps[name]}", json={"status": status})
            assert r.status_code == 200, r.text
    with people.client("gp") as c:
        r = c.post(
            f"/v1/dossiers/{ins}/documents",
            json={
                "type_code": "11488-4",
                "title": "Consultation",
                "mime_type": "text/plain",
                "content_base64": base64.b64encode(b"examen normal").decode(),
            },
        )
        assert r.status_code == 201, r.text
    with people.client("urgentist") as c:
        r = c.post(
            f"/v1/dossiers/{ins}/emergency-access",
            json={"reason": "Patient inconscient aux urgences", "mode": "break_glass"},
        )
        assert r.status_code in (200, 201), r.text
    with people.client("patient") as c:
        weight = {"kind": "weight", "value": 70, "unit": "kg", "measured_at": "2026-01-05T08:00Z"}
        r = c.post(f"/v1/dossiers/{ins}/measurements", json=weight)
        assert r.status_code == 201, r.text
        visit = {"title": "Dentiste", "starts_at": "2026-12-01T09:00+01:00"}
        visit["ends_at"] = "2026-12-01T09:30+01:00"
        assert c.post(f"/v1/dossiers/{ins}/appointments", json=visit).status_code == 201
        r = c.put(f"/v1/dossiers/{ins}/prevention", json={"messages": False})
        assert r.status_code == 200, r.text
    assert people.reads("gp") == people.reads("pharmacist") == people.reads("urgentist") == 200
    assert people.reads("nurse") == 403
    assert until(lambda: {"document_added", "emergency_access"} <= set(people.inbox_kinds()))

    def whole_trace(who: str) -> int:
        with people.client(who) as c:
            r = c.get(f"/v1/dossiers/{ins}/access-log", params={"page_size": 100})
        assert r.status_code == 200, r.text
        return sum(1 for e in r.json()["entries"] if e["actor"]["id"] != rpps[who])

    assert until(lambda: whole_trace("gp")), "the GP reads the whole trace"

    with people.client("patient") as c:
        assert c.post(f"/v1/dossiers/{ins}/close").status_code == 200
        r = c.post(f"/v1/dossiers/{ins}/deletion-request")
        assert r.status_code == 200, r.text
    stack.set_clock_offset(31 * DAY)  # an express deletion purges after 30 days

    def purged() -> bool:
        with people.client("patient") as c:
            return c.get(f"/v1/dossiers/{ins}").status_code == 404

    assert until(purged, timeout=30)
    assert until(lambda: not people.inbox_kinds() or set(people.inbox_kinds()) == {"login"}), (
        "the inbox of the purged dossier is erased"
    )

    with people.client("patient") as c:  # the same person opens a DMP again
        stack.open_dossier(c.headers["authorization"].removeprefix("Bearer "), people.patient)

        def care_team() -> dict[str, Any] | None:
            r = c.get(f"/v1/dossiers/{ins}/professionals")
            return r.json() if r.status_code == 200 else None

        team = until(care_team)
        assert team is not None
        assert not team.get("authorized") and not team.get("blocked"), team
        assert c.get(f"/v1/dossiers/{ins}/measurements").json() == {"items": []}
        # the agenda's appointments and choices went with the purge
        assert until(lambda: c.get(f"/v1/dossiers/{ins}/appointments").json() == {"items": []})
        assert until(lambda: c.get(f"/v1/dossiers/{ins}/reminders").json()["prevention_messages"])
        r = c.get(f"/v1/dossiers/{ins}/consent-settings")
        assert r.status_code == 200, r.text
    for who in ("gp", "pharmacist", "urgentist"):
        assert people.reads(who) == 403, f"the old {who} reads nothing"
    assert whole_trace("gp") == 0, "the old GP reads nothing of the trace"
    kinds = people.inbox_kinds()
    assert not {"document_added", "emergency_access", "access_first"} & set(kinds), kinds

    # the nurse the old dossier blocked is not blocked in the new one: blocking wins over an
    # emergency, and here the emergency access is granted
    with people.client("nurse") as c:
        r = c.post(
            f"/v1/dossiers/{ins}/emergency-access",
            json={"reason": "Malaise au domicile", "mode": "break_glass"},
        )
        assert r.status_code in (200, 201), r.text
