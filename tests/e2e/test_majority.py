"""A minor's legal representatives stop at the minor's majority, on the injected clock: a
notice beforehand to the minor and to each representative, then the end, everywhere the
representatives were held (identity, the dossier, consent, audit), each told once."""

from __future__ import annotations

import base64
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo import MongoClient

from dmp_stack.testing import RunningStack, until

DAY = 86_400
NOTICE_DAYS = 30  # identity's default
KINDS = ("representation_ending", "representation_ended")


def majority_in(days: int) -> tuple[str, date]:
    """A birth date whose 18th birthday is `days` from today (Paris), and that birthday."""
    majority = datetime.now(ZoneInfo("Europe/Paris")).date() + timedelta(days=days)
    if (majority.month, majority.day) == (2, 29):
        majority += timedelta(days=1)
    return majority.replace(year=majority.year - 18).isoformat(), majority


class People:
    """The accounts of the story and fresh tokens for each moment of the moved clock."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.admin = stack.admin_token()
        self.mother = stack.create_patient(self.admin)
        self.father = stack.create_patient(self.admin)
        self.gp = stack.create_professional(self.admin, "10")

    def register_minor(self, birth_date: str, representatives: list[str]) -> dict[str, Any]:
        return self.stack.create_patient(
            self.admin, legal_representatives=representatives, birth_date=birth_date
        )

    def token(self, who: dict[str, Any]) -> str:
        kind, key = ("professional", "rpps") if "rpps" in who else ("patient", "ins")
        return str(self.stack.login(kind, who[key], who["password"], who["email"])["access_token"])

    def inbox(self, who: dict[str, Any]) -> list[dict[str, Any]]:
        with self.stack.client(self.token(who)) as c:
            r = c.get("/v1/me/notifications", params={"page_size": 100})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def told(self, who: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        return [n for n in self.inbox(who) if n["kind"] == kind]

    def add_document(self, ins: str, title: str) -> None:
        with self.stack.client(self.token(self.gp)) as c:
            r = c.post(
                f"/v1/dossiers/{ins}/documents",
                json={
                    "type_code": "11488-4",
                    "title": title,
                    "mime_type": "text/plain",
                    "content_base64": base64.b64encode(title.encode()).decode(),
                },
            )
        assert r.status_code == 201, r.text


def reads(stack: RunningStack, token: str, ins: str) -> dict[str, int]:
    """The status of each of the patient's routes that a legal representative could read."""
    with stack.client(token) as c:
        return {
            "dossier": c.get(f"/v1/dossiers/{ins}").status_code,
            "documents": c.get(f"/v1/dossiers/{ins}/documents").status_code,
            "access-log": c.get(f"/v1/dossiers/{ins}/access-log").status_code,
        }


ALLOWED = {"dossier": 200, "documents": 200, "access-log": 200}
REFUSED = {"dossier": 403, "documents": 403, "access-log": 403}


def test_representation_ends_at_majority_with_a_notice_before(clock: RunningStack) -> None:
    stack = clock
    people = People(stack)
    mother, father = people.mother, people.father
    birth, majority = majority_in(NOTICE_DAYS + 10)
    minor = people.register_minor(birth, [mother["ins"], father["ins"]])
    ins = minor["ins"]
    # Another minor, far from majority, with a representative of their own: untouched.
    guardian = stack.create_patient(people.admin)
    young = stack.create_patient(people.admin, legal_representatives=[guardian["ins"]])
    for who in (minor, young):
        stack.open_dossier(people.token(who), who)
    people.add_document(ins, "Vaccins")
    assert until(lambda: reads(stack, people.token(mother), ins) == ALLOWED)
    assert reads(stack, people.token(father), ins) == ALLOWED

    # 30 days before the majority: the notice, to the minor and to both representatives.
    stack.set_clock_offset(10 * DAY)
    everyone = {"minor": minor, "mother": mother, "father": father}
    for name, who in everyone.items():
        assert until(lambda who=who: people.told(who, "representation_ending")), name
    time.sleep(2)  # the schedule has run again, several times: still once
    on = majority.strftime("%d/%m/%Y")
    for name, who in everyone.items():
        [notice] = people.told(who, "representation_ending")
        assert on in notice["body"], (name, notice)
        words = notice["title"] + notice["body"]
        for private in ("Camille", "Martin", ins, "Vaccins"):  # no name, no INS, nothing medical
            assert private not in words, (name, private)
    [to_mother] = people.told(mother, "representation_ending")
    assert "personne que vous représentez" in to_mother["body"]
    assert until(
        lambda: any(
            m["Subject"] == to_mother["title"] for m in stack.mailbox.messages_to(mother["email"])
        )
    ), "by e-mail too, as the representative chose by default"
    # Until the day, nothing else changes: the representatives still act for the minor.
    assert reads(stack, people.token(mother), ins) == ALLOWED
    assert not people.told(minor, "representation_ended")

    # The 18th birthday: the representation ends, everywhere.
    stack.set_clock_offset((NOTICE_DAYS + 10) * DAY)
    for name, who in everyone.items():
        assert until(lambda who=who: people.told(who, "representation_ended")), name
    for parent in (mother, father):
        token = people.token(parent)
        assert until(lambda token=token: reads(stack, token, ins) == REFUSED), reads(
            stack, token, ins
        )
    token = people.token(minor)
    assert reads(stack, token, ins) == ALLOWED, "the now-adult patient reads everything"
    with stack.client(token) as c:
        r = c.get(f"/v1/dossiers/{ins}/documents")
        assert [d["title"] for d in r.json()["items"]] == ["Vaccins"]
        r = c.get(f"/v1/dossiers/{ins}/access-log", params={"page_size": 100})
        assert r.status_code == 200, r.text
        ended = [e for e in r.json()["entries"] if e.get("query") == "representation:ended"]
        assert len(ended) == 1, r.json()["entries"]
        assert ended[0]["action"] == "update" and ended[0]["actor"]["kind"] == "service"
    with MongoClient(stack.infra.mongo.url) as client:  # every copy of them is gone
        held = {
            "identity": client["identity"]["accounts"].find_one({"ins": ins, "kind": "patient"}),
            "dossier": client["dossier"]["dossiers"].find_one({"_id": ins}),
            "consent": client["consent"]["consents"].find_one({"_id": ins}),
        }
        for service, doc in held.items():
            assert doc is not None and doc["legal_representatives"] == [], service

    # A former representative is told nothing more of the patient's dossier.
    people.add_document(ins, "Bilan")
    assert until(lambda: len(people.told(minor, "document_added")) == 2)
    time.sleep(1)
    assert len(people.told(mother, "document_added")) == 1  # the first document's only

    # Later still: nothing is told again.
    stack.set_clock_offset((NOTICE_DAYS + 15) * DAY)
    time.sleep(2)
    for name, who in everyone.items():
        assert len(people.told(who, "representation_ended")) == 1, name
        assert len(people.told(who, "representation_ending")) == 1, name
    # The other minor is still represented, and neither of them was told anything.
    assert reads(stack, people.token(guardian), young["ins"]) == ALLOWED
    for who in (young, guardian):
        assert not {n["kind"] for n in people.inbox(who)} & set(KINDS)
