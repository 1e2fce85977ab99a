"""The agenda through the gateway, on the whole stack: the patient's appointments, shared with
the professionals they choose (a blocked one sees nothing), proposals a professional makes and
the patient accepts or declines, the iCalendar export; and the prevention reminders, computed
from the rules file for a newborn, a 16-year-old, a 50-year-old woman and a 70-year-old man,
each announced once on the moved clock with the act's name alone, by two replicas racing."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import icalendar

from dmp_kit.errors import PROBLEM_BASE
from dmp_kit.identifiers import ins_control_key
from dmp_stack.testing import CareTeam, RunningStack, make_ins, make_rpps, until

DAY = 86_400
PARIS = ZoneInfo("Europe/Paris")
KIND = "prevention_reminder"


def problem(r: httpx.Response, status: int, slug: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == PROBLEM_BASE + slug, body
    if field is not None:
        assert body.get("field") == field, body


def slot(days: int, hour: int = 9, minutes: int = 30) -> dict[str, str]:
    start = datetime.now(PARIS).replace(hour=hour, minute=0, second=0, microsecond=0)
    start += timedelta(days=days)
    return {
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(minutes=minutes)).isoformat(),
    }


# --- appointments ---------------------------------------------------------------------------


def test_appointments_shared_proposed_accepted_declined_and_exported(stack: RunningStack) -> None:
    team = CareTeam(stack)
    ins = team.ins
    url = f"/v1/dossiers/{ins}/appointments"
    doctor, pharmacist = team.pros["doctor"]["rpps"], team.pros["pharmacist"]["rpps"]

    # The patient adds one, shared with the doctor.
    with team.client("patient") as c:
        r = c.post(
            url,
            json={
                "title": "Cardiologue",
                **slot(3),
                "location": "Hôpital Nord",
                "shared_with": [doctor],
                "notes": "Apporter l'ECG",
            },
        )
        assert r.status_code == 201, r.text
        heart = r.json()
        assert heart["status"] == "confirmed" and heart["proposed_by"] == "patient"
        assert heart["shared_with"] == [doctor]
        # Bad input: a clear 422 naming the field, nothing written.
        problem(
            c.post(url, json={"title": "Dentiste", **slot(2), "ends_at": slot(1)["starts_at"]}),
            422,
            "validation-error",
            "ends_at",
        )
        problem(c.post(url, json={"title": "x" * 201, **slot(2)}), 422, "validation-error", "title")
        problem(
            c.post(url, json={"title": "Dentiste", **slot(20 * 366)}),
            422,
            "validation-error",
            "starts_at",
        )
        problem(
            c.post(url, json={"title": "Dentiste", **slot(2), "shared_with": [make_rpps()]}),
            422,
            "unknown-professional",
            "shared_with.0",
        )
        problem(
            c.post(url, json={"title": "Dentiste", **slot(2), "starts_at": "2030-01-01T10:00"}),
            422,
            "validation-error",
        )
        assert [a["id"] for a in c.get(url).json()["items"]] == [heart["id"]]

    # Shared with the doctor: they see it; the pharmacist and the outsider do not.
    with team.client("doctor") as c:
        assert [a["title"] for a in c.get(url).json()["items"]] == ["Cardiologue"]
    for other in ("pharmacist", "outsider"):
        with team.client(other) as c:
            r = c.get(url)
            assert r.status_code == 200 and r.json()["items"] == [], (other, r.text)

    # The patient moves it and shares it with the pharmacist too.
    with team.client("patient") as c:
        moved = c.patch(
            f"{url}/{heart['id']}", json={**slot(4), "shared_with": [doctor, pharmacist]}
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["starts_at"].startswith(
            (datetime.now(PARIS) + timedelta(days=4))
            .replace(hour=9)
            .astimezone(ZoneInfo("UTC"))
            .strftime("%Y-%m-%dT%H")
        )
        problem(
            c.patch(f"{url}/{heart['id']}", json={"ends_at": slot(1)["starts_at"]}),
            422,
            "validation-error",
            "ends_at",
        )
        problem(
            c.patch(f"{url}/00000000-0000-7000-8000-000000000000", json={"title": "x"}),
            404,
            "appointment-not-found",
        )
    with team.client("pharmacist") as c:
        assert [a["id"] for a in c.get(url).json()["items"]] == [heart["id"]]
        # A professional does not change the patient's appointment.
        problem(c.patch(f"{url}/{heart['id']}", json={"title": "Autre"}), 403, "access-denied")
        problem(c.post(f"{url}/{heart['id']}/cancel"), 403, "access-denied")

    # The doctor proposes one: shared with them; the patient accepts it.
    with team.client("doctor") as c:
        r = c.post(url, json={"title": "Consultation de suivi", **slot(10)})
        assert r.status_code == 201, r.text
        proposal = r.json()
        assert proposal["status"] == "proposed" and proposal["proposed_by"] == doctor
        assert proposal["shared_with"] == [doctor]
        problem(c.post(f"{url}/{proposal['id']}/accept"), 403, "access-denied")
    with team.client("patient") as c:
        accepted = c.post(f"{url}/{proposal['id']}/accept")
        assert accepted.status_code == 200 and accepted.json()["status"] == "confirmed"
        problem(c.post(f"{url}/{proposal['id']}/decline"), 409, "appointment-closed")
    # The pharmacist proposes another, then withdraws it; the patient cannot accept it after.
    with team.client("pharmacist") as c:
        other = c.post(url, json={"title": "Bilan de médication", **slot(12)}).json()
        cancelled = c.post(f"{url}/{other['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    with team.client("doctor") as c:
        problem(c.post(f"{url}/{other['id']}/cancel"), 404, "appointment-not-found")
        third = c.post(url, json={"title": "Vaccination", **slot(15)}).json()
    with team.client("patient") as c:
        problem(c.post(f"{url}/{other['id']}/accept"), 409, "appointment-closed")
        declined = c.post(f"{url}/{third['id']}/decline")
        assert declined.status_code == 200 and declined.json()["status"] == "declined"
        statuses = {a["title"]: a["status"] for a in c.get(url).json()["items"]}
        assert statuses == {
            "Cardiologue": "confirmed",
            "Consultation de suivi": "confirmed",
            "Bilan de médication": "cancelled",
            "Vaccination": "declined",
        }
        # A period: only what overlaps it.
        window = c.get(url, params={"from": slot(9)["starts_at"], "to": slot(11)["starts_at"]})
        assert [a["title"] for a in window.json()["items"]] == ["Consultation de suivi"]

        # The iCalendar export: every appointment but the declined one, stable UIDs.
        r = c.get(f"/v1/dossiers/{ins}/agenda.ics")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/calendar")
        calendar = icalendar.Calendar.from_ical(r.content)
        events = {str(e["SUMMARY"]): e for e in calendar.walk("VEVENT")}
        assert set(events) == {"Cardiologue", "Consultation de suivi", "Bilan de médication"}
        assert str(events["Cardiologue"]["STATUS"]) == "CONFIRMED"
        assert str(events["Bilan de médication"]["STATUS"]) == "CANCELLED"
        assert str(events["Cardiologue"]["LOCATION"]) == "Hôpital Nord"
        assert all("DTSTAMP" in e and ins not in str(e["UID"]) for e in events.values())
        again = icalendar.Calendar.from_ical(c.get(f"/v1/dossiers/{ins}/agenda.ics").content)
        assert {str(e["UID"]) for e in again.walk("VEVENT")} == {
            str(e["UID"]) for e in events.values()
        }

    # Blocked: the doctor sees nothing, proposes nothing.
    team.set_pro("doctor", "blocked")
    with team.client("doctor") as c:
        problem(c.get(url), 403, "access-denied")
        problem(c.post(url, json={"title": "Encore", **slot(5)}), 403, "access-denied")
        problem(c.get(f"/v1/dossiers/{ins}/agenda.ics"), 403, "access-denied")

    # Every read and write is in the patient's access log, under the agenda.
    def traced() -> set[tuple[str, str]]:
        with team.client("patient") as c:
            entries = c.get(f"/v1/dossiers/{ins}/access-log", params={"page_size": 100}).json()
        return {
            ((e.get("actor") or {}).get("id", ""), e["action"])
            for e in entries["entries"]
            if "appointment" in e.get("entry", "") or "calendar" in e.get("entry", "")
        }

    assert until(
        lambda: {(doctor, "search"), (doctor, "create"), (ins, "create"), (ins, "read")} <= traced()
    )


def test_a_trusted_reader_reads_the_agenda_but_does_not_change_it(stack: RunningStack) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    friend = stack.create_patient(admin)
    ins = patient["ins"]
    owner = stack.token_for(patient, "patient")
    stack.open_dossier(owner, patient)
    with stack.client(owner) as c:
        r = c.post(
            f"/v1/dossiers/{ins}/trusted-persons", json={"ins": friend["ins"], "scope": "read"}
        )
        assert r.status_code == 201, r.text
        assert (
            c.post(
                f"/v1/dossiers/{ins}/appointments", json={"title": "Kiné", **slot(2)}
            ).status_code
            == 201
        )
    reader = stack.token_for(friend, "patient")
    with stack.client(reader) as c:
        assert c.post(f"/v1/me/represented/{ins}/accept").status_code == 200
        assert [a["title"] for a in c.get(f"/v1/dossiers/{ins}/appointments").json()["items"]] == [
            "Kiné"
        ]
        assert c.get(f"/v1/dossiers/{ins}/reminders").status_code == 200
        problem(
            c.post(f"/v1/dossiers/{ins}/appointments", json={"title": "Autre", **slot(3)}),
            403,
            "read-only",
        )
        problem(c.put(f"/v1/dossiers/{ins}/prevention", json={"messages": False}), 403, "read-only")
    stranger = stack.token_for(stack.create_patient(admin), "patient")
    with stack.client(stranger) as c:
        problem(c.get(f"/v1/dossiers/{ins}/appointments"), 403, "access-denied")
        problem(c.get(f"/v1/dossiers/{ins}/reminders"), 403, "access-denied")


# --- prevention reminders: the table test ------------------------------------------------------


def ins_of_sex(digit: str) -> str:
    first13 = digit + make_ins()[1:13]
    return f"{first13}{ins_control_key(first13):02d}"


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


# Exactly what the rules file says is due for each, today and 62 days later (newborn: 2 months).
TODAY = {
    "newborn": {"examen-8-jours"},
    "teenager": {"examen-15-16-ans"},
    "woman": {"depistage-sein", "depistage-colorectal", "depistage-col-hpv"},
    "man": {"depistage-colorectal", "grippe", "pneumocoque-65-ans", "zona"},
}
LATER = {**TODAY, "newborn": {"hexavalent-1", "pneumocoque-1", "examen-3-mois"}}


class Family:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = stack.admin_token()
        today = datetime.now(PARIS).date()
        self.parent = stack.create_patient(admin)
        births = {
            "newborn": (today, "1", True),
            "twin": (today, "2", True),
            "teenager": (years_before(today, 16), "1", True),
            "woman": (years_before(today, 50), "2", False),
            "man": (years_before(today, 70), "1", False),
        }
        self.people: dict[str, dict[str, Any]] = {}
        for name, (birth, sex, minor) in births.items():
            ins = ins_of_sex(sex)
            fields: dict[str, Any] = {
                "ins": ins,
                "birth_date": birth.isoformat(),
                "email": f"patient-{ins}@example.org",
            }
            if minor:
                fields["legal_representatives"] = [self.parent["ins"]]
            self.people[name] = stack.create_patient(admin, **fields)
        for who in self.people.values():
            stack.open_dossier(self.token(who), who)

    def token(self, who: dict[str, Any]) -> str:
        return self.stack.token_for(who, "patient")

    def reminders(self, name: str, token: str) -> dict[str, Any]:
        ins = self.people[name]["ins"]
        with self.stack.client(token) as c:
            r = c.get(f"/v1/dossiers/{ins}/reminders")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def told(self, name: str, token: str) -> list[str]:
        with self.stack.client(token) as c:
            r = c.get("/v1/me/notifications", params={"page_size": 100})
        assert r.status_code == 200, r.text
        return sorted(n["title"] for n in r.json()["items"] if n["kind"] == KIND)


def due(listing: dict[str, Any]) -> set[str]:
    return {item["rule_id"] for item in listing["items"] if item["status"] == "due"}


def acts(listing: dict[str, Any], rule_ids: set[str]) -> list[str]:
    return sorted(
        f"Rappel de prévention : {i['act']}" for i in listing["items"] if i["rule_id"] in rule_ids
    )


def test_reminders_for_four_ages_each_announced_once_on_the_moved_clock(
    clock: RunningStack,
) -> None:
    stack = clock
    with stack.another_replica("agenda"):
        reminders_for_four_ages(stack)


def reminders_for_four_ages(stack: RunningStack) -> None:
    family = Family(stack)
    tokens = {name: family.token(who) for name, who in family.people.items()}

    # The twin turns prevention messages off (as soon as the DMP is open: its first reminder
    # may have gone already): the reminders stay, messages stop.
    twin = family.people["twin"]["ins"]
    with stack.client(tokens["twin"]) as c:
        r = c.put(f"/v1/dossiers/{twin}/prevention", json={"messages": False})
        assert r.status_code == 200 and r.json() == {"messages": False}

    listings = {name: family.reminders(name, tokens[name]) for name in TODAY}
    for name, expected in TODAY.items():
        assert due(listings[name]) == expected, (name, listings[name]["items"])
        assert listings[name]["rules_version"] and listings[name]["prevention_messages"]
        for item in listings[name]["items"]:
            assert item["reason"] and item["source"], item
    woman = next(i for i in listings["woman"]["items"] if i["rule_id"] == "depistage-sein")
    assert woman["reason"] == "Recommandé pour les femmes de 50 à 74 ans, tous les 2 ans"
    # The .ics holds each reminder shown as a to-do, from the day it is due.
    man = family.people["man"]
    with stack.client(tokens["man"]) as c:
        r = c.get(f"/v1/dossiers/{man['ins']}/agenda.ics")
    assert r.status_code == 200, r.text
    todos = icalendar.Calendar.from_ical(r.content).walk("VTODO")
    assert sorted(str(t["SUMMARY"]) for t in todos) == acts(
        listings["man"], {i["rule_id"] for i in listings["man"]["items"]}
    )
    assert all(str(t["STATUS"]) == "NEEDS-ACTION" and "DTSTAMP" in t for t in todos)
    # Each one told once, of each reminder due, by the act's name alone.
    for name in TODAY:
        expected = acts(listings[name], TODAY[name])
        told = until(lambda n=name, e=expected: family.told(n, tokens[n]) == e, timeout=30)
        # missing or doubled: the message says which
        assert told, (name, expected, family.told(name, tokens[name]))
    twin_listing = family.reminders("twin", tokens["twin"])
    assert due(twin_listing) == {"examen-8-jours"} and not twin_listing["prevention_messages"]
    time.sleep(2)  # the schedule has run again, several times: still once
    for name in TODAY:
        assert family.told(name, tokens[name]) == acts(listings[name], TODAY[name]), name
    twin_told = family.told("twin", tokens["twin"])
    assert twin_told in ([], acts(twin_listing, {"examen-8-jours"}))
    [mail] = [
        m
        for m in stack.mailbox.messages_to(man["email"])
        if str(m["Subject"]).startswith("Rappel de prévention") and "grippe" in str(m["Subject"])
    ]
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Rappel de prévention : Vaccin contre la grippe saisonnière" in text
    for private in (man["ins"], "Camille", "Martin", man["birth_date"]):
        assert private not in text + str(mail["Subject"])

    # 62 days later: the newborn is 2 months old; the others have nothing new.
    stack.set_clock_offset(62 * DAY)
    tokens = {name: family.token(who) for name, who in family.people.items()}
    later = {name: family.reminders(name, tokens[name]) for name in LATER}
    for name, expected in LATER.items():
        assert due(later[name]) == expected, (name, later[name]["items"])
    newborn_told = sorted(
        acts(listings["newborn"], TODAY["newborn"]) + acts(later["newborn"], LATER["newborn"])
    )
    assert until(lambda: family.told("newborn", tokens["newborn"]) == newborn_told, timeout=30)
    assert due(family.reminders("twin", tokens["twin"])) == LATER["newborn"]
    time.sleep(2)
    for name in ("teenager", "woman", "man"):
        assert family.told(name, tokens[name]) == acts(listings[name], TODAY[name]), name
    assert family.told("newborn", tokens["newborn"]) == newborn_told
    assert family.told("twin", tokens["twin"]) == twin_told  # three due, none told

    # A vaccination note marks the vaccinations due done; the examination stays due.
    newborn = family.people["newborn"]
    gp = stack.create_professional(stack.admin_token(), "10")
    note = stack.add_document(
        stack.token_for(gp, "professional"), newborn["ins"], "87273-9", "Vaccins de 2 mois"
    )

    def statuses() -> dict[str, tuple[str, str | None]]:
        items = family.reminders("newborn", tokens["newborn"])["items"]
        return {
            i["rule_id"]: (i["status"], i.get("document_id"))
            for i in items
            if i["rule_id"] in LATER["newborn"]
        }

    assert until(
        lambda: statuses()
        == {
            "hexavalent-1": ("done", note["id"]),
            "pneumocoque-1": ("done", note["id"]),
            "examen-3-mois": ("due", None),
        }
    )
    # The patient side marks the examination done, and postpones the twin's.
    exam = next(i for i in later["newborn"]["items"] if i["rule_id"] == "examen-3-mois")
    with stack.client(tokens["newborn"]) as c:
        r = c.post(f"/v1/dossiers/{newborn['ins']}/reminders/{exam['id']}/done", json={})
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        problem(
            c.post(f"/v1/dossiers/{newborn['ins']}/reminders/nothing~0/done", json={}),
            404,
            "reminder-not-found",
        )
        problem(
            c.post(
                f"/v1/dossiers/{newborn['ins']}/reminders/{exam['id']}/done",
                json={"document_id": "00000000-0000-7000-8000-000000000000"},
            ),
            404,
            "document-not-found",
        )
    with stack.client(tokens["twin"]) as c:
        soon = (datetime.now(PARIS).date() + timedelta(days=62 + 10)).isoformat()
        r = c.post(f"/v1/dossiers/{twin}/reminders/{exam['id']}/postpone", json={"until": soon})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "postponed" and r.json()["postponed_until"] == soon
        problem(
            c.post(
                f"/v1/dossiers/{twin}/reminders/{exam['id']}/postpone", json={"until": "2000-01-01"}
            ),
            422,
            "validation-error",
            "until",
        )
