"""FHIR search parameters and ITI-65 Bundles into the platform's requests: the translation
alone, no server (the end-to-end tests run them against the stack)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp_gateway.fhir import codes, translate
from dmp_gateway.fhir.outcomes import FhirOutcomes
from dmp_gateway.fhir.resources import Rendered, document_reference
from dmp_gateway.fhir.routes import _patch_operations
from dmp_kit.auth import Principal
from dmp_kit.catalogue import load_catalogue
from dmp_kit.errors import InvalidArgument, PermissionDenied

CATALOGUE = load_catalogue()
INS = "180017512345660"


def search(*params: tuple[str, str]) -> translate.Search:
    return translate.document_search(list(params), CATALOGUE)


def when(ts: object) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("system", sorted(codes.INS_SYSTEMS))
def test_each_ins_system_names_the_patient(system: str) -> None:
    assert search(("patient.identifier", f"{system}|{INS}")).ins == INS


def test_the_patient_is_required_and_one() -> None:
    with pytest.raises(InvalidArgument) as refused:
        search(("status", "current"))
    assert refused.value.field == "patient"
    with pytest.raises(InvalidArgument):
        search(("patient.identifier", f"urn:oid:1.2.3|{INS}"))
    with pytest.raises(InvalidArgument):
        search(("patient", "Patient/123"))


def test_dates_take_their_prefix_and_precision() -> None:
    s = search(("patient", f"Patient/{INS}"), ("date", "ge2026-11"), ("date", "lt2026-11-15"))
    assert when(s.query.created_from) == datetime(2026, 11, 1, tzinfo=UTC)
    assert when(s.query.created_before) == datetime(2026, 11, 15, tzinfo=UTC)
    s = search(("patient", f"Patient/{INS}"), ("period", "2026"))
    assert when(s.query.period_from) == datetime(2026, 1, 1, tzinfo=UTC)
    assert when(s.query.period_before) == datetime(2027, 1, 1, tzinfo=UTC)
    s = search(("patient", f"Patient/{INS}"), ("date", "le2026-11-30T10:00:00Z"))
    assert when(s.query.created_before) == datetime(2026, 11, 30, 10, 0, 1, tzinfo=UTC)
    with pytest.raises(InvalidArgument) as refused:
        search(("patient", f"Patient/{INS}"), ("date", "ne2026"))
    assert refused.value.field == "date"


def test_tokens_map_to_the_platform_codes() -> None:
    s = search(
        ("patient", f"Patient/{INS}"),
        ("type", f"{codes.TYPE_FR}|EXPPAT_2,http://loinc.org|11490-0"),
        ("category", "31"),
        ("status", "current"),
        ("security-label", "INVISIBLE_PATIENT"),
        ("related", f"DocumentReference/{INS}-abc"),
        ("identifier", "urn:ietf:rfc:3986|urn:uuid:0193"),
    )
    assert sorted(s.query.type_codes) == ["11490-0", "DOC_PATIENT"]
    assert list(s.query.sections) == ["imagerie"]
    assert set(s.query.statuses) == {pb.DOCUMENT_STATUS_APPROVED, pb.DOCUMENT_STATUS_ARCHIVED}
    assert list(s.query.labels) == ["INVISIBLE_PATIENT"]
    assert list(s.query.related) == ["abc"]
    assert "0193" in s.query.identifiers
    assert not s.empty
    # a code no document can have: an empty result, not an error
    assert search(("patient", f"Patient/{INS}"), ("type", "http://loinc.org|0000-0")).empty
    assert search(("patient", f"Patient/{INS}"), ("security-label", "V")).empty
    # N holds for every document
    assert not search(("patient", f"Patient/{INS}"), ("security-label", "N")).query.labels


def bundle(**document: object) -> bytes:
    doc = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
        "subject": {"reference": f"Patient/{INS}"},
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "title": "CR",
                    "data": base64.b64encode(b"texte").decode(),
                }
            }
        ],
        **document,
    }
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "request": {"method": "POST", "url": "List"},
                    "resource": {
                        "resourceType": "List",
                        "status": "current",
                        "mode": "working",
                        "extension": [
                            {
                                "url": f"{codes.MHD_EXT}/ihe-sourceId",
                                "valueIdentifier": {"value": "urn:oid:1.2.3"},
                            }
                        ],
                        "subject": {"reference": f"Patient/{INS}"},
                    },
                },
                {"request": {"method": "POST", "url": "DocumentReference"}, "resource": doc},
            ],
        }
    ).encode()


HOSPITAL = Principal(kind="system", subject="h", client_id="h", roles=frozenset({"facility"}))
DOCTOR = Principal(kind="professional", subject="d", rpps="10000000001", profession="10")


def test_a_bundle_becomes_one_submission() -> None:
    sub = translate.submission(translate.parse_bundle(bundle()), HOSPITAL, CATALOGUE)
    assert sub.ins == INS
    (doc,) = sub.request.documents
    assert (doc.type_code, doc.title, doc.mime_type, doc.content) == (
        "11488-4",
        "CR",
        "text/plain",
        b"texte",
    )
    assert sub.request.submission.source_id == "urn:oid:1.2.3"


def test_a_professional_submits_as_their_own_author() -> None:
    contained = [
        {
            "resourceType": "Practitioner",
            "id": "a",
            "identifier": [{"system": codes.IDNPS, "value": "810000000002"}],
        }
    ]
    raw = bundle(contained=contained, author=[{"reference": "#a"}])
    with pytest.raises(PermissionDenied) as refused:
        translate.submission(translate.parse_bundle(raw), DOCTOR, CATALOGUE)
    assert refused.value.field == "Bundle.entry[1].resource.author[0]"
    # a hospital names the professional who wrote it
    sub = translate.submission(translate.parse_bundle(raw), HOSPITAL, CATALOGUE)
    assert sub.request.documents[0].context.author_person.rpps == "10000000002"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"type": {"coding": [{"system": "http://loinc.org", "code": "0000-0"}]}}, "type"),
        (
            {"securityLabel": [{"coding": [{"system": codes.VISIBILITY, "code": "MASQUE_PS"}]}]},
            "securityLabel",
        ),
        ({"relatesTo": [{"code": "appends", "target": {"reference": "x"}}]}, "relatesTo[0].code"),
        ({"subject": {"reference": "Patient/180017512345678"}}, "subject"),
    ],
)
def test_what_cannot_be_taken_names_its_element(change: dict[str, object], where: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        translate.submission(translate.parse_bundle(bundle(**change)), HOSPITAL, CATALOGUE)
    assert refused.value.field == f"Bundle.entry[1].resource.{where}"


def test_a_size_or_hash_that_is_not_the_contents_is_refused() -> None:
    for attachment, where in (
        ({"size": 99}, "size"),
        ({"hash": base64.b64encode(b"x" * 20).decode()}, "hash"),
    ):
        content = [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "title": "CR",
                    "data": base64.b64encode(b"texte").decode(),
                    **attachment,
                }
            }
        ]
        with pytest.raises(InvalidArgument) as refused:
            translate.submission(
                translate.parse_bundle(bundle(content=content)), HOSPITAL, CATALOGUE
            )
        assert refused.value.field == f"Bundle.entry[1].resource.content[0].attachment.{where}"


def test_a_rendered_document_is_kept_per_version_of_its_metadata() -> None:
    m = pb.DocumentMetadata(
        id="0193",
        ins=INS,
        type_code="11488-4",
        section="comptes_rendus",
        title="CR",
        author="10000000001",
        mime_type="text/plain",
        size=5,
        sha256="00",
        sha1="a9993e364706816aba3e25717850c26c9cd0d89d",
        status=pb.DOCUMENT_STATUS_APPROVED,
    )
    m.created_at.FromDatetime(datetime(2026, 11, 30, tzinfo=UTC))
    rendered = Rendered(CATALOGUE, size=2)
    names = ("Claire", "Martin", "10")
    first = rendered.document(m, "http://x/fhir/R4", names)
    assert rendered.document(m, "http://x/fhir/R4", names) is first
    m.confidentiality.append("MASQUE_PS")
    masked = rendered.document(m, "http://x/fhir/R4", names)
    assert "MASQUE_PS" in masked and "MASQUE_PS" not in first
    built = document_reference(m, "http://x/fhir/R4", CATALOGUE, names)
    assert built.model_dump_json(exclude_none=True) == masked


@pytest.mark.parametrize(
    "operations",
    [
        {},
        [],
        [{"op": "copy", "from": "/contained", "path": "/contained/-"}],
        [{"op": "move", "from": "/status", "path": "/type"}],
        [{"op": "replace", "path": "/type/coding/0/code", "value": "x"}],
        [{"op": "add", "path": "/statusX", "value": "x"}],
        [{"op": "test", "path": "/status", "value": "current"}] * 21,
    ],
)
def test_a_patch_may_only_touch_what_may_change(operations: object) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _patch_operations(operations)
    assert refused.value.field is not None
    assert refused.value.field.startswith(
        ("body", "DocumentReference.type", "DocumentReference.statusX")
    )


def test_a_patch_of_labels_status_or_archiving_passes() -> None:
    ops = [
        {"op": "add", "path": "/securityLabel/-", "value": {}},
        {"op": "replace", "path": "/status", "value": "entered-in-error"},
        {"op": "remove", "path": "/extension"},
    ]
    assert _patch_operations(ops) == ops


@pytest.mark.parametrize("value", ["2026-13", "2026-02-30", "2026-11-31", "9999-12-31T25:00:00Z"])
def test_an_impossible_date_is_refused_with_its_parameter(value: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        search(("patient", f"Patient/{INS}"), ("date", value))
    assert refused.value.field == "date"


def test_an_unhandled_error_under_fhir_is_a_500_operation_outcome() -> None:
    async def broken(scope: object, receive: object, send: object) -> None:
        raise RuntimeError("a bug, with /internal/details")

    client = TestClient(FhirOutcomes(broken), raise_server_exceptions=False)
    r = client.get("/fhir/R4/DocumentReference")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/fhir+json"
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["details"]["coding"][0]["code"] == "internal-error"
    assert "internal/details" not in r.text
