"""dossier's gRPC contract, the service alone. Consent decides every access and identity
knows the insured: both are away, so a well-formed request that needs them is UNAVAILABLE
(never an access granted by default); everything checked before them is exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import StatusCode as S

from dmp.consent.v1 import consent_pb2
from dmp.dossier.v1 import dossier_pb2 as pb
from dmp.dossier.v1 import dossier_pb2_grpc
from dmp_stack.contract import (
    DOCTOR_RPPS,
    PATIENT_INS,
    PHARMACIST_RPPS,
    TESTS,
    Case,
)

# The four tests every service has (dmp_stack.contract), run on this module's tables.
globals().update(TESTS)

SERVICE = "dossier"
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["DossierService"]
STUB = dossier_pb2_grpc.DossierServiceStub
PUBLIC: set[str] = set()
BAD_INS = "180057512345600"  # a wrong control key


def tomorrow() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    return stamp


def ago() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    return stamp


def document(**fields: object) -> pb.AddDocumentRequest:
    base: dict[str, object] = {
        "ins": PATIENT_INS,
        "type_code": "11488-4",
        "title": "Compte rendu",
        "mime_type": "text/plain",
        "content": b"contenu",
    }
    return pb.AddDocumentRequest(**{**base, **fields})  # type: ignore[arg-type]


def no_exports(answer: pb.ListExportsResponse) -> None:
    assert list(answer.items) == []


EXPORT_ID = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
Ins = PATIENT_INS
CASES = [
    Case(
        "CreateExport",
        "a patient without a DMP",
        pb.CreateExportRequest(),
        "patient",
        S.NOT_FOUND,
        field="ins",
        problem="dossier-not-found",
    ),
    Case(
        "CreateExport",
        "a professional: a patient's own, for themselves",
        pb.CreateExportRequest(),
        "doctor",
        S.PERMISSION_DENIED,
        problem="patient-only",
    ),
    Case(
        "CreateExport",
        "a service's account",
        pb.CreateExportRequest(),
        "dossier service",
        S.PERMISSION_DENIED,
        problem="patient-only",
    ),
    Case("CreateExport", "no token", pb.CreateExportRequest(), None, S.UNAUTHENTICATED),
    Case(
        "ListExports",
        "a patient with none",
        pb.ListExportsRequest(),
        "patient",
        S.OK,
        check=no_exports,
    ),
    Case(
        "ListExports",
        "an administrator",
        pb.ListExportsRequest(),
        "admin",
        S.PERMISSION_DENIED,
        problem="patient-only",
    ),
    Case(
        "GetExport",
        "an export that does not exist, or is someone else's",
        pb.GetExportRequest(id=EXPORT_ID),
        "patient",
        S.NOT_FOUND,
        field="id",
        problem="export-not-found",
    ),
    Case(
        "GetExport",
        "no id",
        pb.GetExportRequest(),
        "patient",
        S.NOT_FOUND,
        field="id",
        problem="export-not-found",
    ),
    Case(
        "GetExport",
        "a professional",
        pb.GetExportRequest(id=EXPORT_ID),
        "doctor",
        S.PERMISSION_DENIED,
        problem="patient-only",
    ),
    Case(
        "GetExportContent",
        "an export that does not exist, or is someone else's",
        pb.GetExportContentRequest(id=EXPORT_ID),
        "patient",
        S.NOT_FOUND,
        field="id",
        problem="export-not-found",
    ),
    Case(
        "GetExportContent",
        "the dossier's own account",
        pb.GetExportContentRequest(id=EXPORT_ID),
        "dossier service",
        S.PERMISSION_DENIED,
        problem="patient-only",
    ),
    Case(
        "OpenDossier",
        "the patient's consent, with consent away to agree",
        pb.OpenDossierRequest(ins=Ins, vitale_serial="12345678", patient_consent=True),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "OpenDossier",
        "without the patient's consent",
        pb.OpenDossierRequest(ins=Ins, vitale_serial="12345678"),
        "doctor",
        S.INVALID_ARGUMENT,
        field="patient_consent",
    ),
    Case(
        "OpenDossier",
        "an INS with a wrong control key",
        pb.OpenDossierRequest(ins=BAD_INS, patient_consent=True),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "GetDossier",
        "with consent away to decide",
        pb.GetDossierRequest(ins=Ins),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "GetDossier",
        "a malformed INS",
        pb.GetDossierRequest(ins="abc"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "CloseDossier",
        "with consent away to decide",
        pb.CloseDossierRequest(ins=Ins),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "CloseDossier",
        "a malformed INS",
        pb.CloseDossierRequest(ins=""),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "ReopenDossier",
        "with consent away to decide",
        pb.ReopenDossierRequest(ins=Ins),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "ReopenDossier",
        "a malformed INS",
        pb.ReopenDossierRequest(ins=BAD_INS),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "RequestDeletion",
        "with consent away to decide",
        pb.RequestDeletionRequest(ins=Ins),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "RequestDeletion",
        "a malformed INS",
        pb.RequestDeletionRequest(ins="1"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "GetDossierState",
        "consent, about a dossier that does not exist",
        pb.GetDossierStateRequest(ins=Ins),
        "consent service",
        S.NOT_FOUND,
        field="ins",
        problem="dossier-not-found",
    ),
    Case(
        "GetDossierState",
        "consent, a malformed INS",
        pb.GetDossierStateRequest(ins="1"),
        "consent service",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "GetDossierState",
        "the patient",
        pb.GetDossierStateRequest(ins=Ins),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "GetDossierState",
        "an insurer system",
        pb.GetDossierStateRequest(ins=Ins),
        "insurer",
        S.PERMISSION_DENIED,
    ),
    Case(
        "MarkConsentChange",
        "consent, a change begun for a dossier that does not exist (nothing to mark)",
        pb.MarkConsentChangeRequest(ins=Ins, change_id="0" * 32),
        "consent service",
        S.OK,
    ),
    Case(
        "MarkConsentChange",
        "consent, a malformed INS",
        pb.MarkConsentChangeRequest(ins="1", change_id="0" * 32),
        "consent service",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "MarkConsentChange",
        "consent, a change id that could name a field",
        pb.MarkConsentChangeRequest(ins=Ins, change_id="a.b", done=True),
        "consent service",
        S.INVALID_ARGUMENT,
        field="change_id",
    ),
    Case(
        "MarkConsentChange",
        "the patient",
        pb.MarkConsentChangeRequest(ins=Ins, change_id="0" * 32),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "MarkConsentChange",
        "another service's account",
        pb.MarkConsentChangeRequest(ins=Ins, change_id="0" * 32),
        "dossier service",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ReadableDocuments",
        "the patient, consent away to decide",
        pb.ReadableDocumentsRequest(ins=Ins, document_ids=["a"]),
        "patient",
        S.OK,
        check=lambda a: list(a.document_ids) == [],  # no dossier here: nothing is readable
    ),
    Case(
        "ReadableDocuments",
        "a malformed INS",
        pb.ReadableDocumentsRequest(ins="1"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "ReadableDocuments",
        "too many ids at once",
        pb.ReadableDocumentsRequest(ins=Ins, document_ids=[str(i) for i in range(1001)]),
        "doctor",
        S.INVALID_ARGUMENT,
        field="document_ids",
    ),
    Case(
        "PreviewDocuments",
        "the patient, no dossier here",
        pb.PreviewDocumentsRequest(ins=Ins, viewer=consent_pb2.ViewerRef(profession="60")),
        "patient",
        S.NOT_FOUND,
        field="ins",
    ),
    Case(
        "PreviewDocuments",
        "a malformed INS",
        pb.PreviewDocumentsRequest(ins="1", viewer=consent_pb2.ViewerRef(profession="60")),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "PreviewDocuments",
        "a page too large",
        pb.PreviewDocumentsRequest(
            ins=Ins, viewer=consent_pb2.ViewerRef(profession="60"), page_size=10_000
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="page_size",
    ),
    Case(
        "PreviewDocuments",
        "a cursor that is not one",
        pb.PreviewDocumentsRequest(
            ins=Ins, viewer=consent_pb2.ViewerRef(profession="60"), cursor="abc"
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="cursor",
    ),
    Case(
        "CountOpenings",
        "an administrator, none yet",
        pb.CountOpeningsRequest(),
        "admin",
        S.OK,
        check=lambda a: list(a.counts) == [],
    ),
    Case("CountOpenings", "a doctor", pb.CountOpeningsRequest(), "doctor", S.PERMISSION_DENIED),
    Case(
        "AddDocument",
        "well formed, with consent away to decide",
        document(),
        "doctor",
        S.UNAVAILABLE,
    ),
    Case(
        "AddDocument",
        "a type outside the catalogue",
        document(type_code="XYZ"),
        "doctor",
        S.INVALID_ARGUMENT,
        field="type_code",
        problem="unknown-type-code",
    ),
    Case(
        "AddDocument", "no title", document(title=" "), "doctor", S.INVALID_ARGUMENT, field="title"
    ),
    Case(
        "AddDocument",
        "not a MIME type",
        document(mime_type="pdf"),
        "doctor",
        S.INVALID_ARGUMENT,
        field="mime_type",
    ),
    Case(
        "AddDocument",
        "a malformed INS",
        document(ins="x"),
        "doctor",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "AddDocuments",
        "well formed, with consent away to decide",
        pb.AddDocumentsRequest(ins=Ins, documents=[document(), document()]),
        "doctor",
        S.UNAVAILABLE,
    ),
    Case(
        "AddDocuments",
        "no document",
        pb.AddDocumentsRequest(ins=Ins),
        "doctor",
        S.INVALID_ARGUMENT,
        field="documents",
    ),
    Case(
        "AddDocuments",
        "the second document's type outside the catalogue: refused before consent is asked",
        pb.AddDocumentsRequest(ins=Ins, documents=[document(), document(type_code="XYZ")]),
        "doctor",
        S.INVALID_ARGUMENT,
        field="documents[1].type_code",
        problem="unknown-type-code",
    ),
    Case(
        "AddDocuments",
        "a document of another patient",
        pb.AddDocumentsRequest(ins=Ins, documents=[document(ins=BAD_INS)]),
        "doctor",
        S.INVALID_ARGUMENT,
        field="documents[0].ins",
    ),
    Case(
        "AddDocuments",
        "two documents with one unique id",
        pb.AddDocumentsRequest(
            ins=Ins,
            documents=[
                document(context=pb.DocumentContext(unique_id="urn:oid:1.2.3.4")),
                document(context=pb.DocumentContext(unique_id="urn:oid:1.2.3.4")),
            ],
        ),
        "doctor",
        S.INVALID_ARGUMENT,
        field="documents[1].context.unique_id",
    ),
    Case(
        "AddDocuments",
        "a unique id that is neither an OID nor a UUID URN",
        pb.AddDocumentsRequest(
            ins=Ins, documents=[document(context=pb.DocumentContext(unique_id="1.2.3"))]
        ),
        "doctor",
        S.INVALID_ARGUMENT,
        field="documents[0].context.unique_id",
    ),
    Case(
        "AddDocuments",
        "an author named by a bad RPPS",
        pb.AddDocumentsRequest(
            ins=Ins,
            documents=[
                document(
                    context=pb.DocumentContext(author_person=pb.AuthorPerson(rpps="12345678901"))
                )
            ],
        ),
        "doctor",
        S.INVALID_ARGUMENT,
        field="documents[0].context.author_person.rpps",
    ),
    Case(
        "AddDocuments",
        "a professional naming someone else as the author",
        pb.AddDocumentsRequest(
            ins=Ins,
            documents=[
                document(
                    context=pb.DocumentContext(author_person=pb.AuthorPerson(rpps=PHARMACIST_RPPS))
                )
            ],
        ),
        "doctor",
        S.PERMISSION_DENIED,
        field="documents[0].context.author_person.rpps",
        problem="author-only",
    ),
    Case(
        "AddDocuments",
        "a patient naming a professional as the author",
        pb.AddDocumentsRequest(
            ins=Ins,
            documents=[
                document(
                    type_code="DOC_PATIENT",
                    context=pb.DocumentContext(author_person=pb.AuthorPerson(rpps=DOCTOR_RPPS)),
                )
            ],
        ),
        "patient",
        S.PERMISSION_DENIED,
        field="documents[0].context.author_person",
        problem="author-only",
    ),
    Case(
        "AddDocuments",
        "a submission set's source that is no OID",
        pb.AddDocumentsRequest(
            ins=Ins, documents=[document()], submission=pb.SubmissionSet(source_id="hospital")
        ),
        "doctor",
        S.INVALID_ARGUMENT,
        field="submission.source_id",
    ),
    Case(
        "AddDocuments",
        "a malformed INS",
        pb.AddDocumentsRequest(ins="x", documents=[document()]),
        "doctor",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "GetDocument",
        "in a dossier that does not exist",
        pb.GetDocumentRequest(ins=Ins, document_id="d"),
        "doctor",
        S.NOT_FOUND,
        field="ins",
        problem="dossier-not-found",
    ),
    Case(
        "GetDocument",
        "a malformed INS",
        pb.GetDocumentRequest(ins="x", document_id="d"),
        "doctor",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "GetDocumentContent",
        "in a dossier that does not exist",
        pb.GetDocumentContentRequest(ins=Ins, document_id="d"),
        "patient",
        S.NOT_FOUND,
        field="ins",
        problem="dossier-not-found",
    ),
    Case(
        "ListDocuments",
        "a dossier that does not exist",
        pb.ListDocumentsRequest(ins=Ins),
        "patient",
        S.NOT_FOUND,
        field="ins",
        problem="dossier-not-found",
    ),
    Case(
        "ListDocuments",
        "a section that does not exist",
        pb.ListDocumentsRequest(ins=Ins, section="attic"),
        "patient",
        S.INVALID_ARGUMENT,
        field="section",
        problem="unknown-section",
    ),
    Case(
        "ListDocuments",
        "a search on a type outside the catalogue",
        pb.ListDocumentsRequest(ins=Ins, query=pb.DocumentQuery(type_codes=["XYZ"])),
        "patient",
        S.INVALID_ARGUMENT,
        field="type_code",
        problem="unknown-type-code",
    ),
    Case(
        "ListDocuments",
        "a page too large",
        pb.ListDocumentsRequest(ins=Ins, page_size=5000),
        "patient",
        S.INVALID_ARGUMENT,
        field="page_size",
    ),
    Case(
        "UpdateDocument",
        "a document that does not exist",
        pb.UpdateDocumentRequest(ins=Ins, document_id="d", masked_from_professionals=True),
        "patient",
        S.NOT_FOUND,
        field="document_id",
        problem="document-not-found",
    ),
    Case(
        "DeleteDocument",
        "a document that does not exist",
        pb.DeleteDocumentRequest(ins=Ins, document_id="d"),
        "doctor",
        S.NOT_FOUND,
        field="document_id",
        problem="document-not-found",
    ),
    Case(
        "GetProfile",
        "with consent away to decide",
        pb.GetProfileRequest(ins=Ins),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "GetProfile",
        "a malformed INS",
        pb.GetProfileRequest(ins="1"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "PutProfile",
        "a measurement taken tomorrow",
        pb.PutProfileRequest(
            ins=Ins,
            profile=pb.Profile(
                measurements=[
                    pb.Measurement(kind="weight", value="70", unit="kg", measured_at=tomorrow())
                ]
            ),
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="measurements.0.measured_at",
    ),
    Case(
        "PutProfile",
        "well formed, with consent away to decide",
        pb.PutProfileRequest(ins=Ins, profile=pb.Profile(allergies=["Pénicilline"])),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "GetEmergencyContacts",
        "with consent away to decide",
        pb.GetEmergencyContactsRequest(ins=Ins),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "PutEmergencyContacts",
        "eleven contacts",
        pb.PutEmergencyContactsRequest(
            ins=Ins,
            contacts=[
                pb.EmergencyContact(name=f"Contact {i}", phone="+33600000000") for i in range(11)
            ],
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="contacts",
    ),
    Case(
        "GetAdvanceDirectives",
        "with consent away to decide",
        pb.GetAdvanceDirectivesRequest(ins=Ins),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "PutAdvanceDirectives",
        "empty directives",
        pb.PutAdvanceDirectivesRequest(ins=Ins),
        "patient",
        S.INVALID_ARGUMENT,
        field="text",
    ),
    Case(
        "ListMeasurements",
        "with consent away to decide",
        pb.ListMeasurementsRequest(ins=Ins, kind="bmi"),
        "doctor",
        S.UNAVAILABLE,
    ),
    Case(
        "ListMeasurements",
        "a kind that is not measured",
        pb.ListMeasurementsRequest(ins=Ins, kind="temperature"),
        "patient",
        S.INVALID_ARGUMENT,
        field="kind",
    ),
    Case(
        "AddMeasurement",
        "well formed, with consent away to decide",
        pb.AddMeasurementRequest(ins=Ins, kind="weight", value=72.5, unit="kg", measured_at=ago()),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "AddMeasurement",
        "a systolic pressure below the diastolic",
        pb.AddMeasurementRequest(
            ins=Ins,
            kind="blood_pressure",
            systolic=70,
            diastolic=90,
            unit="mm[Hg]",
            measured_at=ago(),
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="systolic",
        problem="measurement-out-of-range",
    ),
    Case(
        "AddMeasurement",
        "a weight taken tomorrow",
        pb.AddMeasurementRequest(
            ins=Ins, kind="weight", value=72.5, unit="kg", measured_at=tomorrow()
        ),
        "doctor",
        S.INVALID_ARGUMENT,
        field="measured_at",
    ),
    Case(
        "AddMeasurement",
        "a BMI, which is computed",
        pb.AddMeasurementRequest(ins=Ins, kind="bmi", value=22, unit="kg/m2", measured_at=ago()),
        "patient",
        S.INVALID_ARGUMENT,
        field="kind",
    ),
    Case(
        "DeleteMeasurement",
        "with consent away to decide",
        pb.DeleteMeasurementRequest(ins=Ins, measurement_id="m"),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "DeleteMeasurement",
        "a malformed INS",
        pb.DeleteMeasurementRequest(ins="1", measurement_id="m"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
]
SLOW = Case("CountOpenings", "an administrator", pb.CountOpeningsRequest(), "admin", S.OK)
