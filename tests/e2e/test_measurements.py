"""Issue 20 §2, through the gateway: the patient's health measurements — each kind in its UCUM
unit, implausible input refused with its field, the BMI computed, the care team reading under
the habilitation matrix and blocking, each author deleting only their own entries, every read
and write traced, no value in an event."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dmp_stack.fhir_validator import FhirValidator
from dmp_stack.testing import CareTeam, RunningStack, collect_events, until

PROBLEM = "application/problem+json"


def problem(r: Any, status: int, slug: str | None = None, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    if slug:
        assert r.json()["type"].endswith("/" + slug), r.json()
    if field:
        assert r.json()["field"] == field, r.json()


def at(days_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()


class Dossier(CareTeam):
    """A patient's open DMP with a GP, an authorised doctor and pharmacist, and an outsider."""

    def add(self, who: str, **body: Any) -> Any:
        with self.client(who) as c:
            return c.post(f"/v1/dossiers/{self.ins}/measurements", json=body)

    def added(self, who: str, **body: Any) -> dict[str, Any]:
        r = self.add(who, **body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def series(self, who: str, **params: str) -> Any:
        with self.client(who) as c:
            return c.get(f"/v1/dossiers/{self.ins}/measurements", params=params)

    def items(self, who: str = "patient", **params: str) -> list[dict[str, Any]]:
        r = self.series(who, **params)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def delete(self, who: str, measurement_id: str) -> Any:
        with self.client(who) as c:
            return c.delete(f"/v1/dossiers/{self.ins}/measurements/{measurement_id}")


@pytest.fixture
def dossier(stack: RunningStack) -> Dossier:
    return Dossier(stack)


def test_each_kind_in_its_unit_and_the_bmi_computed(dossier: Dossier) -> None:
    height = dossier.added("patient", kind="height", value=175, unit="cm", measured_at=at(30))
    assert height["source"] == "patient" and height["own"] and not height["computed"]
    weight = dossier.added(
        "patient", kind="weight", value=76.6, unit="kg", measured_at=at(2), note="le matin"
    )
    pressure = dossier.added(
        "patient",
        kind="blood_pressure",
        systolic=132,
        diastolic=84,
        unit="mm[Hg]",
        measured_at=at(1),
    )
    assert (pressure["systolic"], pressure["diastolic"], pressure["unit"]) == (132, 84, "mm[Hg]")
    assert "value" not in pressure
    dossier.added("patient", kind="heart_rate", value=62, unit="/min", measured_at=at(1))
    sugar = dossier.added("patient", kind="glycaemia", value=105, unit="mg/dL", measured_at=at(1))
    assert (sugar["value"], sugar["unit"]) == (1.05, "g/L")  # mg/dL converted
    dossier.added("patient", kind="waist", value=92, unit="cm", measured_at=at(3))

    items = dossier.items()
    assert [i["measured_at"] for i in items] == sorted(i["measured_at"] for i in items)
    kinds = sorted(i["kind"] for i in items)
    assert kinds == sorted(
        ["height", "weight", "bmi", "blood_pressure", "heart_rate", "glycaemia", "waist"]
    )
    bmi = next(i for i in items if i["kind"] == "bmi")
    assert (bmi["value"], bmi["unit"], bmi["computed"], bmi["own"]) == (25.0, "kg/m2", True, False)
    assert bmi["measured_at"] == weight["measured_at"]

    # one kind; a window of dates
    assert [i["id"] for i in dossier.items(kind="weight")] == [weight["id"]]
    assert [i["value"] for i in dossier.items(kind="bmi")] == [25.0]
    recent = dossier.items(**{"from": at(1.5)})
    assert {i["kind"] for i in recent} == {"blood_pressure", "heart_rate", "glycaemia"}
    old = dossier.items(to=at(10))
    assert [i["id"] for i in old] == [height["id"]]
    problem(dossier.series("patient", kind="temperature"), 422, field="kind")


def pressure(systolic: float, diastolic: float) -> dict[str, Any]:
    return {
        "kind": "blood_pressure",
        "systolic": systolic,
        "diastolic": diastolic,
        "unit": "mm[Hg]",
    }


def test_implausible_input_is_refused_with_its_field_and_writes_nothing(
    dossier: Dossier,
) -> None:
    day = at(1)
    for body, field in [
        ({"kind": "weight", "value": 7000, "unit": "kg"}, "value"),
        ({"kind": "height", "value": 1.75, "unit": "cm"}, "value"),
        ({"kind": "heart_rate", "value": 400, "unit": "/min"}, "value"),
        ({"kind": "glycaemia", "value": 50, "unit": "g/L"}, "value"),
        (pressure(80, 90), "systolic"),
        (pressure(80, 80), "systolic"),
        (pressure(350, 80), "systolic"),
        (pressure(120, 10), "diastolic"),
    ]:
        problem(
            dossier.add("patient", **body, measured_at=day), 422, "measurement-out-of-range", field
        )
    problem(
        dossier.add("patient", kind="weight", value=70, unit="kg", measured_at=at(-1)),
        422,
        field="measured_at",
    )
    problem(dossier.add("patient", kind="weight", value=70, unit="lb", measured_at=day), 422)
    problem(
        dossier.add("patient", kind="bmi", value=22, unit="kg/m2", measured_at=day),
        422,
        field="kind",
    )
    assert dossier.items() == []


def test_the_care_team_reads_under_the_matrix_and_each_deletes_only_their_own(
    dossier: Dossier,
) -> None:
    mine = dossier.added("patient", kind="weight", value=70, unit="kg", measured_at=at(5))
    # The measurements count as a synthesis (the profile's type): the doctors and the
    # pharmacist the patient authorised read them; an outsider does not.
    for who in ("gp", "doctor", "pharmacist"):
        assert [i["id"] for i in dossier.items(who)] == [mine["id"]], who
        assert dossier.items(who)[0]["own"] is False
    problem(dossier.series("outsider"), 403)
    problem(dossier.add("outsider", kind="weight", value=71, unit="kg", measured_at=at(1)), 403)

    theirs = dossier.added("doctor", **pressure(145, 92), measured_at=at(1))
    assert theirs["source"] == "professional" and theirs["own"]
    # nobody deletes another's entry
    problem(dossier.delete("doctor", mine["id"]), 403, "not-your-measurement", "measurement_id")
    problem(dossier.delete("patient", theirs["id"]), 403, "not-your-measurement")
    problem(dossier.delete("gp", mine["id"]), 403, "not-your-measurement")

    # Blocked: refused reading, writing and deleting (their own entry stays)
    dossier.set_pro("doctor", "blocked")
    problem(dossier.series("doctor"), 403)
    problem(dossier.add("doctor", kind="heart_rate", value=70, unit="/min", measured_at=at(1)), 403)
    problem(dossier.delete("doctor", theirs["id"]), 403)
    assert {i["id"] for i in dossier.items()} == {mine["id"], theirs["id"]}

    # The patient deletes their own: gone for everyone; a second time, not found
    r = dossier.delete("patient", mine["id"])
    assert r.status_code == 204, r.text
    assert [i["id"] for i in dossier.items("gp")] == [theirs["id"]]
    problem(dossier.delete("patient", mine["id"]), 404, "measurement-not-found", "measurement_id")

    # A closed dossier changes only by reopening
    with dossier.client("patient") as c:
        assert c.post(f"/v1/dossiers/{dossier.ins}/close").status_code == 200
    problem(
        dossier.add("patient", kind="weight", value=70, unit="kg", measured_at=at(1)),
        409,
        "dossier-closed",
    )
    problem(dossier.delete("gp", theirs["id"]), 409, "dossier-closed")
    assert [i["id"] for i in dossier.items("patient")] == [theirs["id"]]


async def test_every_read_and_write_is_traced_and_events_carry_no_value(
    stack: RunningStack, dossier: Dossier
) -> None:
    point = dossier.added("patient", kind="glycaemia", value=1.23, unit="g/L", measured_at=at(1))
    assert dossier.items("pharmacist")
    assert dossier.delete("patient", point["id"]).status_code == 204
    pharmacist = dossier.pros["pharmacist"]["rpps"]

    def entries() -> set[tuple[str, str, str, str]]:
        with dossier.client("patient") as c:
            r = c.get(f"/v1/dossiers/{dossier.ins}/access-log", params={"page_size": 100})
        assert r.status_code == 200, r.text
        found = {
            (e["actor"]["id"], e["action"], e.get("query", ""), e["outcome"])
            for e in r.json()["entries"]
            if not e["withheld"]
        }
        return found if expected <= found else set()

    expected = {
        (dossier.ins, "create", "measurements:glycaemia", "success"),
        (dossier.ins, "delete", "measurements:glycaemia", "success"),
        (pharmacist, "read", "measurements", "success"),
    }
    assert until(entries), "the reads and writes reached the trace"

    events = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "dossier.record_updated",
        lambda seen: sum(e.patient_ins == dossier.ins for e in seen) >= 2,
    )
    mine = [e for e in events if e.patient_ins == dossier.ins]
    assert [e.record_updated.record for e in mine] == ["measurements", "measurements"]
    assert all(b"1.23" not in e.SerializeToString() for e in mine)


@pytest.fixture(scope="module")
def validator() -> Iterator[FhirValidator]:
    with FhirValidator() as v:
        yield v


def test_measurements_are_fhir_observations_of_the_vital_signs_profiles(
    dossier: Dossier, validator: FhirValidator
) -> None:
    dossier.added("patient", kind="height", value=180, unit="cm", measured_at=at(9))
    dossier.added("patient", kind="weight", value=81, unit="kg", measured_at=at(8))
    dossier.added("doctor", **pressure(128, 79), measured_at=at(7))
    dossier.added("patient", kind="heart_rate", value=58, unit="/min", measured_at=at(6))
    dossier.added("patient", kind="glycaemia", value=5.5, unit="mmol/L", measured_at=at(5))
    dossier.added("patient", kind="waist", value=90, unit="cm", measured_at=at(4))

    def search(who: str, **params: str) -> Any:
        with dossier.client(who) as c:
            return c.get(
                "/fhir/R4/Observation",
                params={"patient": f"Patient/{dossier.ins}", **params},
                headers={"accept": "application/fhir+json"},
            )

    r = search("gp")
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert validator.validate(bundle) == []
    found = {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in bundle["entry"]}
    assert set(found) == {"8302-2", "29463-7", "39156-5", "85354-9", "8867-4", "2339-0", "8280-0"}
    for resource in found.values():
        assert validator.validate(resource) == [], resource
        assert resource["subject"]["reference"] == f"Patient/{dossier.ins}"
    profile = {code: r.get("meta", {}).get("profile", [None])[0] for code, r in found.items()}
    assert profile["29463-7"] == "http://hl7.org/fhir/StructureDefinition/bodyweight"
    assert profile["85354-9"] == "http://hl7.org/fhir/StructureDefinition/bp"
    assert profile["2339-0"] is None  # glycaemia is not a vital sign
    bp = found["85354-9"]
    assert [
        (c["code"]["coding"][0]["code"], c["valueQuantity"]["value"], c["valueQuantity"]["code"])
        for c in bp["component"]
    ] == [("8480-6", 128, "mm[Hg]"), ("8462-4", 79, "mm[Hg]")]
    assert bp["performer"][0]["identifier"]["value"] == "8" + dossier.pros["doctor"]["rpps"]
    assert found["39156-5"]["valueQuantity"] == {
        "value": 25.0,
        "unit": "kg/m2",
        "system": "http://unitsofmeasure.org",
        "code": "kg/m2",
    }
    assert found["2339-0"]["valueQuantity"]["value"] == 0.991  # mmol/L in g/L

    # by code, by category, by date; an unknown code finds nothing
    only = search("patient", code="http://loinc.org|8867-4").json()
    assert [e["resource"]["code"]["coding"][0]["code"] for e in only["entry"]] == ["8867-4"]
    lab = search("patient", category="laboratory").json()
    assert [e["resource"]["code"]["coding"][0]["code"] for e in lab["entry"]] == ["2339-0"]
    since = search("patient", date="ge" + at(5.5)[:19]).json()
    assert {e["resource"]["code"]["coding"][0]["code"] for e in since["entry"]} == {
        "2339-0",
        "8280-0",
    }
    assert search("patient", code="12345-6").json()["total"] == 0

    # refused as /v1 refuses; a search without its patient names it
    denied = search("outsider")
    assert denied.status_code == 403 and denied.json()["resourceType"] == "OperationOutcome"
    with dossier.client("patient") as c:
        r = c.get("/fhir/R4/Observation", headers={"accept": "application/fhir+json"})
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["patient"]
    with dossier.client("gp") as c:
        statement = c.get("/fhir/R4/metadata").json()
    assert validator.validate(statement) == []
    kinds = {res["type"] for res in statement["rest"][0]["resource"]}
    assert "Observation" in kinds
