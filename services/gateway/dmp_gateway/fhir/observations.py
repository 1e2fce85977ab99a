"""Health measurements as FHIR Observations: the R4 vital-signs profiles (LOINC codes, UCUM
quantities) for weight, height, BMI, blood pressure and heart rate; waist circumference and
glycaemia, which no R4 core profile covers, as plain Observations with their LOINC code."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir.resources.R4B.observation import Observation

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp_gateway.fhir import codes
from dmp_gateway.fhir.resources import concept, iso
from dmp_gateway.fhir.translate import _bounds, patient_ins
from dmp_kit.errors import InvalidArgument

Json = dict[str, Any]
UCUM = "http://unitsofmeasure.org"
CATEGORIES = "http://terminology.hl7.org/CodeSystem/observation-category"
CORE = "http://hl7.org/fhir/StructureDefinition"


@dataclass(frozen=True)
class Coded:
    loinc: str
    display: str
    category: str
    profile: str = ""  # an R4 core vital-signs profile, when one covers the kind


# Sources: the R4 vital-signs profiles (hl7.org/fhir/R4/observation-vitalsigns.html) and LOINC.
KINDS: dict[str, Coded] = {
    "weight": Coded("29463-7", "Body weight", "vital-signs", f"{CORE}/bodyweight"),
    "height": Coded("8302-2", "Body height", "vital-signs", f"{CORE}/bodyheight"),
    "bmi": Coded("39156-5", "Body mass index (BMI) [Ratio]", "vital-signs", f"{CORE}/bmi"),
    "blood_pressure": Coded("85354-9", "Blood pressure panel", "vital-signs", f"{CORE}/bp"),
    "heart_rate": Coded("8867-4", "Heart rate", "vital-signs", f"{CORE}/heartrate"),
    "waist": Coded("8280-0", "Waist Circumference at umbilicus by Tape measure", "vital-signs"),
    "glycaemia": Coded("2339-0", "Glucose [Mass/volume] in Blood", "laboratory"),
}
BY_LOINC = {c.loinc: kind for kind, c in KINDS.items()}
SYSTOLIC = ("8480-6", "Systolic blood pressure")
DIASTOLIC = ("8462-4", "Diastolic blood pressure")
SEARCH = [
    ("patient", "reference", "the patient (Patient/INS); this or patient.identifier is required"),
    ("patient.identifier", "token", "the patient's INS (urn:oid:1.2.250.1.213.1.4.8|…)"),
    ("code", "token", "LOINC: 29463-7, 8302-2, 39156-5, 85354-9, 8867-4, 8280-0, 2339-0"),
    ("category", "token", "vital-signs | laboratory"),
    ("date", "date", "when it was measured (ge, gt, le, lt, eq)"),
]
PROFILES = sorted({c.profile for c in KINDS.values() if c.profile})


def observation_id(ins: str, measurement_id: str) -> str:
    return f"{ins}-{measurement_id}"


def quantity(value: float, unit: str) -> Json:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def observation(ins: str, m: pb.HealthMeasurement) -> Observation:
    coded = KINDS[m.kind]
    data: Json = {
        "resourceType": "Observation",
        "id": observation_id(ins, m.id),
        "status": "final",
        "category": [concept(CATEGORIES, coded.category)],
        "code": {**concept(codes.LOINC, coded.loinc, coded.display), "text": coded.display},
        "subject": {"reference": f"Patient/{ins}"},
        "effectiveDateTime": iso(m.measured_at),
        "issued": iso(m.recorded_at),
    }
    if coded.profile:
        data["meta"] = {"profile": [coded.profile]}
    if m.source == "patient":
        data["performer"] = [{"reference": f"Patient/{ins}"}]
    elif m.source == "professional" and m.author:
        data["performer"] = [
            {
                "type": "Practitioner",
                "identifier": {"system": codes.IDNPS, "value": "8" + m.author},
            }
        ]
    if m.kind == "blood_pressure":
        data["component"] = [
            {"code": concept(codes.LOINC, *part), "valueQuantity": quantity(value, m.unit)}
            for part, value in ((SYSTOLIC, m.systolic), (DIASTOLIC, m.diastolic))
        ]
    else:
        data["valueQuantity"] = quantity(m.value, m.unit)
    if m.computed:
        data["derivedFrom"] = [
            {"reference": f"Observation/{observation_id(ins, m.id.removeprefix('bmi-'))}"}
        ]
    if m.note:
        data["note"] = [{"text": m.note}]
    return Observation.model_validate(data)


@dataclass
class ObservationSearch:
    ins: str
    kinds: list[str]  # empty: every kind
    since: datetime | None = None
    before: datetime | None = None
    kept: list[tuple[str, str]] = field(default_factory=list)
    empty: bool = False  # a code or category no measurement has

    def wants(self, kind: str) -> bool:
        return not self.empty and (not self.kinds or kind in self.kinds)


def observation_search(params: list[tuple[str, str]]) -> ObservationSearch:
    ins = ""
    kinds: set[str] | None = None
    dates: list[str] = []
    empty = False
    for name, value in params:
        if name in ("patient", "patient.identifier", "subject", "subject.identifier"):
            found = patient_ins(value, name)
            if ins and found != ins:
                raise InvalidArgument("one patient per search", field=name)
            ins = found
        elif name == "code":
            wanted = set()
            for token in value.split(","):
                system, _, code = token.rpartition("|")
                if system and system != codes.LOINC:
                    continue
                if code in BY_LOINC:
                    wanted.add(BY_LOINC[code])
            kinds = wanted if kinds is None else kinds & wanted
            empty = empty or not kinds
        elif name == "category":
            wanted = {
                kind
                for token in value.split(",")
                for kind, c in KINDS.items()
                if token.rpartition("|")[2] == c.category
                and token.rpartition("|")[0] in ("", CATEGORIES)
            }
            kinds = wanted if kinds is None else kinds & wanted
            empty = empty or not kinds
        elif name == "date":
            dates.append(value)
        else:
            raise InvalidArgument(f"{name} is not a search parameter of Observation", field=name)
    if not ins:
        raise InvalidArgument(
            "a search names its patient: patient or patient.identifier", field="patient"
        )
    since, before = _bounds(dates, "date")
    return ObservationSearch(
        ins,
        sorted(kinds or []),
        since,
        before,
        kept=[(k, v) for k, v in params if k != "_count"],
        empty=empty,
    )
