"""ingest's gRPC contract, the service alone (dossier away: claims are staged, REMB documents
wait)."""

from __future__ import annotations

from grpc import StatusCode as S

from dmp.ingest.v1 import ingest_pb2 as pb
from dmp.ingest.v1 import ingest_pb2_grpc
from dmp_stack.contract import (
    OTHER_INS,
    PATIENT_INS,
    PHARMACIST_RPPS,
    TESTS,
    Case,
)

# The four tests every service has (dmp_stack.contract), run on this module's tables.
globals().update(TESTS)

SERVICE = "ingest"
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["IngestService"]
STUB = ingest_pb2_grpc.IngestServiceStub
PUBLIC: set[str] = set()

CSV = (
    "claim_id,ins,care_date,kind,code,label,professional_rpps,amount_paid,amount_reimbursed\n"
    f"c-1,{PATIENT_INS},2026-10-01,consultation,G,Consultation,,25.00,17.50\n"
).encode()
Part = pb.SubmitBatchRequest
CASES = [
    Case(
        "SubmitBatch",
        "a CSV batch from the insurer",
        [Part(format=pb.BATCH_FORMAT_CSV, chunk=CSV[:40]), Part(chunk=CSV[40:])],
        "insurer",
        S.OK,
        check=lambda a: len(a.batch_id) == 36,
    ),
    Case(
        "SubmitBatch",
        "from a doctor",
        [Part(format=pb.BATCH_FORMAT_CSV, chunk=CSV)],
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "SubmitBatch",
        "no format first",
        [Part(chunk=CSV)],
        "insurer",
        S.INVALID_ARGUMENT,
        field="format",
    ),
    Case(
        "SubmitBatch",
        "an empty batch",
        [Part(format=pb.BATCH_FORMAT_JSON_LINES)],
        "insurer",
        S.INVALID_ARGUMENT,
        field="body",
    ),
    Case(
        "GetBatch",
        "no batch id",
        pb.GetBatchRequest(),
        "insurer",
        S.INVALID_ARGUMENT,
        field="batch_id",
    ),
    Case(
        "GetBatch",
        "a batch id far too long",
        pb.GetBatchRequest(batch_id="x" * 65),
        "insurer",
        S.INVALID_ARGUMENT,
        field="batch_id",
    ),
    Case(
        "GetBatch",
        "a batch that does not exist",
        pb.GetBatchRequest(batch_id="nope"),
        "admin",
        S.NOT_FOUND,
        field="batch_id",
    ),
    Case(
        "HasDispensed",
        "the patient about their own care",
        pb.HasDispensedRequest(ins=PATIENT_INS, rpps=PHARMACIST_RPPS),
        "patient",
        S.OK,
        check=lambda a: a.dispensed is False,
    ),
    Case(
        "HasDispensed",
        "about another patient",
        pb.HasDispensedRequest(ins=OTHER_INS, rpps=PHARMACIST_RPPS),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "HasDispensed",
        "a pharmacist asking",
        pb.HasDispensedRequest(ins=PATIENT_INS, rpps=PHARMACIST_RPPS),
        "pharmacist",
        S.PERMISSION_DENIED,
    ),
    Case(
        "HasDispensed",
        "further back than the history",
        pb.HasDispensedRequest(ins=PATIENT_INS, rpps=PHARMACIST_RPPS, months=30),
        "patient",
        S.INVALID_ARGUMENT,
        field="months",
    ),
    Case(
        "HasDispensed",
        "a malformed RPPS",
        pb.HasDispensedRequest(ins=PATIENT_INS, rpps="123"),
        "patient",
        S.INVALID_ARGUMENT,
        field="rpps",
    ),
]
SLOW = Case(
    "GetBatch",
    "a batch that does not exist",
    pb.GetBatchRequest(batch_id="nope"),
    "insurer",
    S.NOT_FOUND,
    field="batch_id",
)
