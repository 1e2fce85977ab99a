"""audit's gRPC contract, the service alone (an empty log: every proof is refused)."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc import StatusCode as S

from dmp.audit.v1 import audit_pb2 as pb
from dmp.audit.v1 import audit_pb2_grpc
from dmp_audit.note import Checkpoint, NoteSigner
from dmp_stack.contract import (
    PATIENT_INS,
    TESTS,
    Case,
)

# The four tests every service has (dmp_stack.contract), run on this module's tables.
globals().update(TESTS)

SERVICE = "audit"
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["AuditService"]
STUB = audit_pb2_grpc.AuditServiceStub
PUBLIC = {
    "GetCheckpoint",
    "GetInclusionProof",
    "GetConsistencyProof",
    "ListPublicKeys",
    "GetTile",
    "SubmitCosignature",
}


def empty_head(answer: Any) -> None:
    head = answer.checkpoint
    assert head.size == 0 and len(head.root_hash) == 64 and head.signature and head.key_id
    # the same head as a C2SP checkpoint note: origin, size 0, the empty tree's root, signature
    lines = answer.note.split("\n")
    assert lines[1:4] == ["0", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", ""], lines
    assert lines[4].startswith(f"\u2014 {lines[0]} ") and lines[5] == ""


def one_key(answer: Any) -> None:
    (key,) = answer.keys  # no witness configured here
    assert key.algorithm == "Ed25519" and len(key.key_id) == 16 and key.public_key
    assert key.role == "log" and key.name == key.verifier_key.split("+")[0]
    name, key_hash, material = key.verifier_key.split("+", 2)
    assert name and len(key_hash) == 8
    assert base64.b64decode(material) == b"\x01" + base64.b64decode(key.public_key)


def no_entries(answer: Any) -> None:
    assert list(answer.entries) == [] and answer.next == ""


Log = pb.ListAccessLogRequest
# The empty tree's checkpoint under the default origin, signed by a key that is not the log's.
FOREIGN_NOTE = NoteSigner(
    "dmp.localhost/v1/audit/log", Ed25519PrivateKey.from_private_bytes(bytes(32))
).sign(Checkpoint("dmp.localhost/v1/audit/log", 0, bytes(32)).text())
CASES = [
    Case(
        "ListAccessLog",
        "the dossier's account, for the patient's export: as the patient reads it",
        Log(ins=PATIENT_INS),
        "dossier service",
        S.OK,
        check=no_entries,
    ),
    Case(
        "ListAccessLog",
        "another service's account, without the export role",
        Log(ins=PATIENT_INS),
        "consent service",
        S.PERMISSION_DENIED,
        problem="not-your-trace",
    ),
    Case(
        "ListAccessLog",
        "the patient's own, empty",
        Log(ins=PATIENT_INS),
        "patient",
        S.OK,
        check=no_entries,
    ),
    Case(
        "ListAccessLog",
        "a malformed INS",
        Log(ins="12345"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "ListAccessLog",
        "a page too large",
        Log(ins=PATIENT_INS, page_size=10_000),
        "patient",
        S.INVALID_ARGUMENT,
        field="page_size",
    ),
    Case(
        "ListAccessLog",
        "a cursor it never gave",
        Log(ins=PATIENT_INS, cursor="x"),
        "patient",
        S.INVALID_ARGUMENT,
        field="cursor",
    ),
    Case(
        "ListAccessLog",
        "another patient's",
        Log(ins=PATIENT_INS),
        "other patient",
        S.PERMISSION_DENIED,
        problem="not-your-trace",
    ),
    Case(
        "ListAccessLog",
        "an administrator",
        Log(ins=PATIENT_INS),
        "admin",
        S.PERMISSION_DENIED,
        problem="not-your-trace",
    ),
    Case(
        "GetCheckpoint",
        "anyone, the empty log's signed head",
        pb.GetCheckpointRequest(),
        None,
        S.OK,
        check=empty_head,
    ),
    Case("ListPublicKeys", "anyone", pb.ListPublicKeysRequest(), None, S.OK, check=one_key),
    Case(
        "GetCheckpoint",
        "the newest witnessed, when no witness has cosigned",
        pb.GetCheckpointRequest(witnessed=True),
        None,
        S.NOT_FOUND,
        problem="not-found",
    ),
    *(
        Case("SubmitCosignature", why, pb.SubmitCosignatureRequest(note=note), None, *refused)
        for why, note, refused in (
            ("not a note", "hello", (S.INVALID_ARGUMENT, "note", "invalid-checkpoint-note")),
            (
                "a checkpoint the log did not sign",
                FOREIGN_NOTE.decode(),
                (S.INVALID_ARGUMENT, "note", "checkpoint-not-signed"),
            ),
        )
    ),
    Case(
        "GetInclusionProof",
        "no entry in an empty log",
        pb.GetInclusionProofRequest(seq=0),
        None,
        S.INVALID_ARGUMENT,
        field="seq",
    ),
    Case(
        "GetInclusionProof",
        "a tree larger than the log",
        pb.GetInclusionProofRequest(seq=0, tree_size=5),
        None,
        S.INVALID_ARGUMENT,
        field="tree_size",
    ),
    Case(
        "GetConsistencyProof",
        "from nothing",
        pb.GetConsistencyProofRequest(),
        None,
        S.INVALID_ARGUMENT,
        field="from",
    ),
    Case(
        "GetConsistencyProof",
        "to a size the log has not reached",
        pb.GetConsistencyProofRequest(from_size=1, to_size=9),
        None,
        S.INVALID_ARGUMENT,
        field="to",
    ),
    Case(
        "GetTile",
        "no tile in an empty log",
        pb.GetTileRequest(path="tile/0/000.p/1"),
        None,
        S.NOT_FOUND,
        problem="not-found",
    ),
    Case(
        "GetTile",
        "not a tile path",
        pb.GetTileRequest(path="tile/0/x000/001"),
        None,
        S.INVALID_ARGUMENT,
        field="path",
    ),
]
# A doctor's view of a trace asks the database who the attending physician is.
SLOW = Case("ListAccessLog", "a doctor", Log(ins=PATIENT_INS), "doctor", S.OK, check=no_entries)
