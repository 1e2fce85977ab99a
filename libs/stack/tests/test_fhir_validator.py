"""The offline FHIR R4 validator (dmp_stack.fhir_validator) on real resources, in a real JVM."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmp_stack.fhir_validator import FhirValidator, validator_jar

INS = "urn:oid:1.2.250.1.213.1.4.8"  # the French national health identifier (INS-NIR)
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": INS, "value": "280017512345678"}],
    "name": [{"family": "Martin", "given": ["Claire"]}],
    "gender": "female",
    "birthDate": "1980-01-19",
}
# LOINC type, French class (urn:oid), confidentiality and format codes: none of these code
# systems is in the base specification, so each is a warning that it could not be checked.
DOCUMENT: dict[str, Any] = {
    "resourceType": "DocumentReference",
    "status": "current",
    "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
    "category": [{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "10"}]}],
    "subject": {"reference": "Patient/p1"},
    "securityLabel": [{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "N"}]}],
    "content": [
        {
            "attachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK"},
            "format": {
                "system": "urn:oid:1.2.250.1.213.1.1.4.2.282",
                "code": "urn:ihe:iti:xds-sd:pdf:2008",
            },
        }
    ],
}


def uuid(n: int) -> str:
    return f"urn:uuid:{n:08d}-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def validator() -> Iterator[FhirValidator]:
    with FhirValidator() as started:
        yield started


def test_a_valid_patient_has_no_error(validator: FhirValidator) -> None:
    assert validator.validate(PATIENT) == []


def test_codes_from_unknown_systems_are_warnings_not_errors(validator: FhirValidator) -> None:
    report = validator.report(DOCUMENT)
    assert report["errors"] == []
    assert report["warnings"] >= 4  # LOINC, the class, the confidentiality and format codes


def test_a_document_reference_without_content_is_an_error_naming_it(
    validator: FhirValidator,
) -> None:
    document = {k: v for k, v in DOCUMENT.items() if k != "content"}
    errors = validator.validate(document)
    assert len(errors) == 1
    assert errors[0]["severity"] == "error"
    assert "DocumentReference.content: minimum required = 1" in errors[0]["message"]


def test_an_unknown_status_is_an_error_on_status(validator: FhirValidator) -> None:
    errors = validator.validate(DOCUMENT | {"status": "bogus"})
    assert errors
    assert {e["location"] for e in errors} == {"DocumentReference.status"}
    assert any("'bogus'" in e["message"] for e in errors)


def test_a_contained_resource_nothing_refers_to_is_an_error(validator: FhirValidator) -> None:
    author = {"resourceType": "Practitioner", "id": "a1", "name": [{"family": "Durand"}]}
    referred = DOCUMENT | {"contained": [author], "author": [{"reference": "#a1"}]}
    assert validator.validate(referred) == []
    errors = validator.validate(DOCUMENT | {"contained": [author]})
    assert [e["location"] for e in errors] == ["DocumentReference.contained[0]"]
    assert "dom-3" in errors[0]["message"]


def test_a_transaction_of_a_document_its_binary_and_a_list_passes(
    validator: FhirValidator,
) -> None:
    document = copy.deepcopy(DOCUMENT)
    document["content"][0]["attachment"] = {"contentType": "application/pdf", "url": uuid(1)}
    listing = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "subject": {"reference": "Patient/p1"},
        "entry": [{"item": {"reference": uuid(2)}}],
    }
    binary = {"resourceType": "Binary", "contentType": "application/pdf", "data": "JVBERi0xLjQK"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": uuid(n), "resource": r, "request": {"method": "POST", "url": kind}}
            for n, r, kind in [
                (1, binary, "Binary"),
                (2, document, "DocumentReference"),
                (3, listing, "List"),
            ]
        ],
    }
    assert validator.validate(bundle) == []
    del bundle["entry"][0]["request"]  # a transaction entry must say what to do
    errors = validator.validate(bundle)
    assert [(e["location"], e["message"].split(":")[1].strip()) for e in errors] == [
        ("Bundle", "bdl-3")
    ]


def test_an_unknown_resource_type_is_fatal_and_the_next_resource_still_passes(
    validator: FhirValidator,
) -> None:
    errors = validator.validate({"resourceType": "Nonsense"})
    assert [e["severity"] for e in errors] == ["fatal"]
    assert validator.validate(PATIENT) == []


def test_the_jar_checks_files_and_exits_1_on_an_error(tmp_path: Path) -> None:
    valid, invalid = tmp_path / "patient.json", tmp_path / "document.json"
    valid.write_text(json.dumps(PATIENT))
    invalid.write_text("not json {")
    run = subprocess.run(
        ["java", "-jar", str(validator_jar()), str(valid), str(invalid)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    reports = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["file"] for r in reports] == [str(valid), str(invalid)]
    assert reports[0]["errors"] == [] and reports[1]["errors"]
