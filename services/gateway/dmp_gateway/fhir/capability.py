"""The CapabilityStatement: exactly what /fhir/R4 supports."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from dmp_gateway.fhir import codes, observations
from dmp_gateway.fhir.resources import dump

DOCUMENT_SEARCH = [
    ("patient", "reference", "the patient (Patient/INS); this or patient.identifier is required"),
    ("patient.identifier", "token", "the patient's INS (urn:oid:1.2.250.1.213.1.4.8|…)"),
    ("status", "token", "current | superseded | entered-in-error"),
    ("type", "token", "LOINC, or TRE_A05 for the French types"),
    ("category", "token", "the class code (TRE_A03)"),
    ("date", "date", "when the platform registered the document"),
    ("creation", "date", "the same instant (attachment.creation)"),
    ("period", "date", "the service period"),
    ("author.given", "string", "the author's given name (prefix)"),
    ("author.family", "string", "the author's family name (prefix)"),
    ("setting", "token", "the practice setting"),
    ("facility", "token", "the facility type"),
    ("event", "token", "an event code"),
    ("format", "token", "the format code"),
    ("security-label", "token", "a visibility label (TRE_A07) or N"),
    ("identifier", "token", "the uniqueId (masterIdentifier) or the entryUUID"),
    ("related", "reference", "a document it replaces or that replaces it"),
    ("contenttype", "token", "the media type"),
    ("_count", "number", "page size, 1 to 200 (50 by default); the next link pages on"),
]
LIST_SEARCH = [
    ("patient", "reference", "the patient; this or patient.identifier is required"),
    ("patient.identifier", "token", "the patient's INS"),
    ("code", "token", "submissionset (folders are not kept)"),
    ("status", "token", "current"),
    ("identifier", "token", "the submission set's uniqueId or entryUUID"),
    ("date", "date", "when it was submitted"),
    ("source.given", "string", "its author's given name"),
    ("source.family", "string", "its author's family name"),
    ("sourceId", "token", "the submitting system's OID"),
    ("designationType", "token", "its content type code"),
    ("_count", "number", "at most this many"),
]


def _params(rows: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    return [{"name": n, "type": t, "documentation": d} for n, t, d in rows]


@cache
def statement(base: str) -> str:
    security = {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "OAuth",
                    }
                ]
            }
        ],
        "description": "Bearer access tokens, as for /v1: patients and professionals from "
        "/v1/auth/otp, systems by OAuth2 client credentials with a signed client assertion "
        "(RFC 7523) at /v1/auth/token. Every read is decided by the patient's consent and "
        "recorded in the audit log; a refusal is an OperationOutcome with the reason /v1 gives.",
    }
    resources = [
        {
            "type": "DocumentReference",
            "supportedProfile": [codes.PROFILE_DOCUMENT],
            "interaction": [
                {"code": "read"},
                {"code": "search-type", "documentation": "ITI-67, by GET and POST _search"},
                {
                    "code": "patch",
                    "documentation": "JSON Patch of status, securityLabel, isArchived",
                },
            ],
            "searchParam": _params(DOCUMENT_SEARCH),
        },
        {
            "type": "List",
            "supportedProfile": [codes.PROFILE_SUBMISSION],
            "interaction": [{"code": "search-type", "documentation": "ITI-66"}],
            "searchParam": _params(LIST_SEARCH),
        },
        {
            "type": "Binary",
            "interaction": [
                {"code": "read", "documentation": "ITI-68: the bytes, or a Binary if asked"}
            ],
        },
        {
            "type": "Observation",
            "supportedProfile": observations.PROFILES,
            "interaction": [
                {
                    "code": "search-type",
                    "documentation": "the patient's health measurements, by GET and POST _search",
                }
            ],
            "searchParam": _params(observations.SEARCH),
        },
        {
            "type": "Patient",
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": _params(
                [
                    ("identifier", "token", "the INS (NIR, NIA, test or demo NIR system)"),
                    ("_id", "token", "the INS"),
                ]
            ),
        },
    ]
    data = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-30",
        "publisher": "DMP",
        "kind": "instance",
        "implementation": {"description": "DMP — FHIR R4 (IHE MHD, ANS PDSm)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "instantiates": [f"{codes.PDSM}/CapabilityStatement/PDSm-GestionnaireDePartageDeDocuments"],
        "rest": [
            {
                "mode": "server",
                "documentation": "JSON only: XML (by Accept or _format) is refused with 406.",
                "security": security,
                "resource": resources,
                "interaction": [
                    {
                        "code": "transaction",
                        "documentation": "ITI-65 Provide Document Bundle: all of it, or nothing",
                    }
                ],
            }
        ],
    }
    return dump(CapabilityStatement.model_validate(data))
