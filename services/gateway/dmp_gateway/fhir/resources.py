"""Resources built from the platform's messages with the fhir.resources models (R4B, whose
resources used here are R4's), serialised as FHIR JSON. A DocumentReference is built once per
version of a document's metadata and kept (see Rendered)."""

from __future__ import annotations

import base64
from typing import Any

from fhir.resources.R4B.binary import Binary
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.list import List as FhirList
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from pydantic import BaseModel

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp.identity.v1 import identity_pb2
from dmp_gateway.fhir import codes
from dmp_gateway.kept import PerVersion
from dmp_kit.catalogue import Catalogue

MEDIA_TYPE = "application/fhir+json"
STATUS = {
    pb.DOCUMENT_STATUS_APPROVED: "current",
    pb.DOCUMENT_STATUS_ARCHIVED: "current",
    pb.DOCUMENT_STATUS_SUPERSEDED: "superseded",
    pb.DOCUMENT_STATUS_DELETED: "entered-in-error",
}
Json = dict[str, Any]


def dump(resource: BaseModel) -> str:
    return resource.model_dump_json(exclude_none=True)


def iso(ts: Any) -> str:
    return str(ts.ToDatetime().isoformat(timespec="milliseconds")) + "Z"


def coding(system: str, code: str, display: str = "") -> Json:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str = "") -> Json:
    return {"coding": [coding(system, code, display)]}


def from_code(code: pb.Code) -> Json:
    return concept(code.system, code.code, code.display)


def doc_id(ins: str, document_id: str) -> str:
    """A document's FHIR id: its dossier's INS and its own id (an INS holds no '-')."""
    return f"{ins}-{document_id}"


def split_id(resource_id: str) -> tuple[str, str]:
    ins, _, own = resource_id.partition("-")
    return ins, own


def ins_identifier(ins: str) -> Json:
    return {
        "use": "official",
        "type": concept(codes.ID_TYPES, "INS-NIR"),
        "system": codes.INS_NIR,
        "value": ins,
    }


def type_concept(catalogue: Catalogue, type_code: str) -> Json:
    if type_code in codes.FR_TYPES:
        code, display = codes.FR_TYPES[type_code]
        return concept(codes.TYPE_FR, code, display)
    label = catalogue.types[type_code].label if type_code in catalogue.types else ""
    return concept(codes.LOINC, type_code, label)


def class_concept(m: pb.DocumentMetadata) -> Json:
    if m.context.HasField("class_code"):
        return from_code(m.context.class_code)
    code, display = codes.TYPE_CLASS.get(m.type_code) or codes.SECTION_CLASS.get(
        m.section, ("10", "Compte rendu")
    )
    return concept(codes.CLASS, code, display)


def security_labels(labels: list[str]) -> list[Json]:
    out = [concept(codes.CONFIDENTIALITY, "N", "normal")]
    out += [
        concept(codes.VISIBILITY, label, codes.VISIBILITY_DISPLAY[label])
        for label in labels
        if label in codes.VISIBILITY_DISPLAY
    ]
    return out


def format_coding(m: pb.DocumentMetadata) -> Json:
    """content.format: a Coding (not a CodeableConcept)."""
    if m.context.HasField("format"):
        f = m.context.format
        return coding(f.system, f.code, f.display)
    found = codes.TYPE_FORMAT.get(m.type_code) or codes.MIME_FORMAT.get(m.mime_type)
    return coding(*(found or codes.OTHER_FORMAT))


def author_resources(m: pb.DocumentMetadata, names: tuple[str, str, str]) -> tuple[list[Json], str]:
    """The contained resources naming the author, and the reference to use."""
    person = m.context.author_person
    rpps = person.rpps or (m.author if m.author.isdigit() and len(m.author) == 11 else "")
    if m.author == m.ins:
        return [], "#patient"
    if rpps:
        given = person.given or names[0]
        family = person.family or names[1]
        practitioner: Json = {
            "resourceType": "Practitioner",
            "id": "author",
            "identifier": [
                {
                    "use": "official",
                    "type": concept(codes.ID_TYPES, "IDNPS"),
                    "system": codes.IDNPS,
                    "value": "8" + rpps,
                },
                {"type": concept(codes.ID_TYPES, "RPPS"), "system": codes.RPPS, "value": rpps},
            ],
        }
        if given or family:
            practitioner["name"] = [
                {k: v for k, v in (("family", family), ("given", [given] if given else None)) if v}
            ]
        role: Json = {
            "resourceType": "PractitionerRole",
            "id": "author-role",
            "practitioner": {"reference": "#author"},
        }
        profession = person.role.code if person.HasField("role") else names[2]
        if profession:
            role["code"] = [
                concept(codes.PROFESSION, profession, codes.PROFESSIONS.get(profession, ""))
            ]
        return [practitioner, role], "#author-role"
    device: Json = {
        "resourceType": "Device",
        "id": "author",
        "identifier": [{"system": codes.RFC3986, "value": f"urn:dmp:client:{m.author}"}],
        "deviceName": [{"name": m.author, "type": "user-friendly-name"}],
    }
    return [device], "#author"


def document_reference(
    m: pb.DocumentMetadata, base: str, catalogue: Catalogue, names: tuple[str, str, str]
) -> DocumentReference:
    """A document's metadata as PDSm's comprehensive DocumentReference."""
    rid = doc_id(m.ins, m.id)
    patient: Json = {
        "resourceType": "Patient",
        "id": "patient",
        "identifier": [ins_identifier(m.ins)],
    }
    contained, author_ref = author_resources(m, names)
    by_patient = author_ref == "#patient"
    ctx = m.context
    start = iso(m.service_start) if m.HasField("service_start") else iso(m.created_at)
    period = {"start": start}
    if ctx.HasField("service_stop"):
        period["end"] = iso(ctx.service_stop)
    context: Json = {
        "period": period,
        "facilityType": from_code(ctx.facility_type)
        if ctx.HasField("facility_type")
        else concept(*(codes.EXP_PATIENT if by_patient else codes.PRIVATE_PRACTICE)),
        "practiceSetting": from_code(ctx.practice_setting)
        if ctx.HasField("practice_setting")
        else concept(*(codes.EXP_PATIENT if by_patient else codes.AMBULATORY)),
        "sourcePatientInfo": {"reference": "#patient"},
    }
    if ctx.events:
        context["event"] = [from_code(e) for e in ctx.events]
    attachment: Json = {
        "contentType": m.mime_type,
        "language": ctx.language or "fr-FR",
        "url": f"{base}/Binary/{rid}",
        "size": m.size,
        "title": m.title,
        "creation": iso(m.created_at),
    }
    if m.sha1:
        attachment["hash"] = base64.b64encode(bytes.fromhex(m.sha1)).decode()
    data: Json = {
        "resourceType": "DocumentReference",
        "id": rid,
        "contained": [patient, *contained],
        "masterIdentifier": {
            "use": "usual",
            "system": codes.RFC3986,
            "value": ctx.unique_id or f"urn:uuid:{m.id}",
        },
        "identifier": [{"use": "official", "system": codes.RFC3986, "value": f"urn:uuid:{m.id}"}],
        "status": STATUS[m.status],
        "type": type_concept(catalogue, m.type_code),
        "category": [class_concept(m)],
        "subject": {"reference": f"Patient/{m.ins}"},
        "date": iso(m.created_at),
        "author": [{"reference": author_ref}],
        "custodian": {"display": "DMP — Mon espace santé"},
        "securityLabel": security_labels(list(m.confidentiality)),
        "content": [{"attachment": attachment, "format": format_coding(m)}],
        "context": context,
    }
    if ctx.description:
        data["description"] = ctx.description
    if m.status == pb.DOCUMENT_STATUS_ARCHIVED:
        data["extension"] = [{"url": codes.IS_ARCHIVED, "valueBoolean": True}]
    if m.replaces:
        data["relatesTo"] = [
            {
                "code": "replaces",
                "target": {"reference": f"DocumentReference/{doc_id(m.ins, m.replaces)}"},
            }
        ]
    return DocumentReference.model_validate(data)


class Rendered:
    """DocumentReferences as JSON, kept per version of a document's metadata (dmp_gateway.kept):
    the model library builds and checks each resource (about half a millisecond), so a page of
    200 is built once, then served from here."""

    def __init__(self, catalogue: Catalogue, size: int = 10_000) -> None:
        self.catalogue = catalogue
        self.kept: PerVersion[tuple[str, tuple[str, str, str]], str] = PerVersion(size)

    def document(self, m: pb.DocumentMetadata, base: str, names: tuple[str, str, str]) -> str:
        return self.kept.get(
            m, (base, names), lambda: dump(document_reference(m, base, self.catalogue, names))
        )


def submission_list(
    first: pb.DocumentMetadata, entries: list[str], names: tuple[str, str, str]
) -> FhirList:
    """A submission set as PDSm's SubmissionSet List, from the first of its documents the
    caller may read; `entries`: the FHIR ids of those the caller may read."""
    s, ins = first.submission, first.ins
    identifiers = [{"use": "official", "system": codes.RFC3986, "value": f"urn:uuid:{s.id}"}]
    if s.unique_id:
        identifiers.append({"use": "usual", "system": codes.RFC3986, "value": s.unique_id})
    contained, author_ref = author_resources(first, names)
    by_patient = author_ref == "#patient"
    designation = (
        from_code(s.content_type)
        if s.HasField("content_type")
        else concept(*(codes.EXP_PATIENT if by_patient else codes.PRIVATE_PRACTICE))
    )
    extensions: list[Json] = [
        {"url": f"{codes.MHD_EXT}/ihe-designationType", "valueCodeableConcept": designation}
    ]
    if s.source_id:
        extensions.append(
            {
                "url": f"{codes.MHD_EXT}/ihe-sourceId",
                "valueIdentifier": {"system": codes.RFC3986, "value": s.source_id},
            }
        )
    data: Json = {
        "resourceType": "List",
        "id": f"{ins}-{s.id}",
        "extension": extensions,
        "identifier": identifiers,
        "status": "current",
        "mode": "working",
        "code": concept(codes.MHD_LIST_TYPES, "submissionset", "SubmissionSet as a FHIR List"),
        "subject": {"reference": f"Patient/{ins}"},
        "date": iso(s.submitted_at),
        "source": {"reference": f"Patient/{ins}"} if by_patient else {"reference": author_ref},
        "entry": [{"item": {"reference": f"DocumentReference/{e}"}} for e in entries],
    }
    if contained and not by_patient:
        data["contained"] = contained
    # No title: it may speak of documents of the set the caller may not read.
    return FhirList.model_validate(data)


def patient(p: identity_pb2.Patient) -> Patient:
    data: Json = {
        "resourceType": "Patient",
        "id": p.ins,
        "identifier": [ins_identifier(p.ins)],
        "name": [{"use": "official", "family": p.family_name, "given": [p.given_name]}],
    }
    if p.birth_date:
        data["birthDate"] = p.birth_date
    return Patient.model_validate(data)


def binary(content_type: str, content: bytes, rid: str) -> Binary:
    return Binary.model_validate(
        {
            "resourceType": "Binary",
            "id": rid,
            "contentType": content_type,
            "data": base64.b64encode(content).decode(),
        }
    )


ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    503: "transient",
    504: "timeout",
}


def outcome(
    status: int, detail: str, problem_type: str = "", expression: list[str] | None = None
) -> OperationOutcome:
    """An error as an OperationOutcome: the REST API's problem type as the issue's detail
    coding (the same reason, the same stable code), the element at fault as its expression."""
    issue: Json = {
        "severity": "error" if status < 500 else "fatal",
        "code": ISSUE_CODES.get(status, "exception"),
        "diagnostics": detail,
    }
    if problem_type:
        system, _, code = problem_type.rpartition("/")
        issue["details"] = {"coding": [{"system": system + "/", "code": code}]}
    if expression:
        issue["expression"] = expression
    return OperationOutcome.model_validate({"resourceType": "OperationOutcome", "issue": [issue]})


def bundle(data: Json) -> Bundle:
    return Bundle.model_validate(data)
