"""messaging's gRPC contract, the service alone: every peer it asks (identity, consent, dossier,
ingest) is away, so what is refused before any question is asked is refused here exactly, and
what needs a peer is UNAVAILABLE, never an answer made up."""

from __future__ import annotations

from grpc import StatusCode as S

from dmp.messaging.v1 import messaging_pb2 as pb
from dmp.messaging.v1 import messaging_pb2_grpc
from dmp_stack.contract import PATIENT_INS, PHARMACIST_RPPS, TESTS, Case

globals().update(TESTS)

SERVICE = "messaging"
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["MessagingService"]
STUB = messaging_pb2_grpc.MessagingServiceStub
PUBLIC: set[str] = set()

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
TEXT_AS_PDF = pb.NewAttachment(upload=pb.Upload(filename="résultats.pdf", content=b"plain text"))
GOOD = pb.NewAttachment(upload=pb.Upload(filename="ordonnance.pdf", content=PDF))


def opening(**fields: object) -> pb.OpenConversationRequest:
    given: dict[str, object] = {"patient_ins": PATIENT_INS, "subject": "Suivi", "body": "Bonjour"}
    return pb.OpenConversationRequest(**{**given, **fields})


def listed_nothing(answer: pb.ListConversationsResponse) -> None:
    assert list(answer.items) == [] and answer.unread_total == 0 and answer.next == ""


def exported_nothing(answer: pb.ExportConversationsResponse) -> None:
    assert list(answer.items) == [] and answer.next == ""


UNKNOWN = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
Export = pb.ExportConversationsRequest
CASES = [
    Case(
        "ExportConversations",
        "the dossier's account, for a patient with none",
        Export(ins=PATIENT_INS),
        "dossier service",
        S.OK,
        check=exported_nothing,
    ),
    Case(
        "ExportConversations",
        "the patient themselves: the dossier's account only",
        Export(ins=PATIENT_INS),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ExportConversations",
        "another service's account, without the export role",
        Export(ins=PATIENT_INS),
        "consent service",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ExportConversations",
        "a malformed INS",
        Export(ins="12345"),
        "dossier service",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "ExportConversations",
        "a page too large",
        Export(ins=PATIENT_INS, page_size=500),
        "dossier service",
        S.INVALID_ARGUMENT,
        field="page_size",
    ),
    Case(
        "ExportConversations",
        "a cursor it never gave",
        Export(ins=PATIENT_INS, cursor="yesterday"),
        "dossier service",
        S.INVALID_ARGUMENT,
        field="cursor",
    ),
    Case(
        "OpenConversation", "an insurer has no mailbox", opening(), "insurer", S.PERMISSION_DENIED
    ),
    Case(
        "OpenConversation",
        "no subject",
        opening(subject="  "),
        "doctor",
        S.INVALID_ARGUMENT,
        field="subject",
    ),
    Case(
        "OpenConversation",
        "a body too long",
        opening(body="x" * 5001),
        "doctor",
        S.INVALID_ARGUMENT,
        field="body",
    ),
    Case(
        "OpenConversation",
        "four attachments",
        opening(attachments=[GOOD] * 4),
        "doctor",
        S.INVALID_ARGUMENT,
        field="attachments",
    ),
    Case(
        "OpenConversation",
        "text named .pdf: judged by its content",
        opening(attachments=[GOOD, TEXT_AS_PDF]),
        "doctor",
        S.INVALID_ARGUMENT,
        field="attachments.1.content",
        problem="invalid-attachment",
    ),
    Case(
        "OpenConversation",
        "an attachment with neither upload nor document",
        opening(attachments=[pb.NewAttachment()]),
        "doctor",
        S.INVALID_ARGUMENT,
        field="attachments.0",
    ),
    Case(
        "OpenConversation",
        "a professional names no pharmacy",
        opening(pharmacy_rpps=PHARMACIST_RPPS),
        "doctor",
        S.INVALID_ARGUMENT,
        field="pharmacy_rpps",
    ),
    Case(
        "OpenConversation",
        "a malformed INS",
        opening(patient_ins="12345"),
        "doctor",
        S.INVALID_ARGUMENT,
        field="patient_ins",
    ),
    Case(
        "OpenConversation",
        "a patient's pharmacy with a bad check digit",
        opening(patient_ins="", pharmacy_rpps="10000000000"),
        "patient",
        S.INVALID_ARGUMENT,
        field="pharmacy_rpps",
    ),
    Case(
        "OpenConversation",
        "consent away: no decision, no conversation",
        opening(),
        "doctor",
        S.UNAVAILABLE,
    ),
    Case(
        "PostMessage",
        "no conversation",
        pb.PostMessageRequest(body="Merci"),
        "patient",
        S.INVALID_ARGUMENT,
        field="conversation_id",
    ),
    Case(
        "PostMessage",
        "an empty body",
        pb.PostMessageRequest(conversation_id=UNKNOWN),
        "patient",
        S.INVALID_ARGUMENT,
        field="body",
    ),
    Case(
        "PostMessage",
        "a conversation that does not exist",
        pb.PostMessageRequest(conversation_id=UNKNOWN, body="Merci"),
        "patient",
        S.NOT_FOUND,
        field="conversation_id",
    ),
    Case(
        "SetConversationStatus",
        "no status",
        pb.SetConversationStatusRequest(conversation_id=UNKNOWN),
        "doctor",
        S.INVALID_ARGUMENT,
        field="status",
    ),
    Case(
        "SetConversationStatus",
        "a conversation that does not exist",
        pb.SetConversationStatusRequest(
            conversation_id=UNKNOWN, status=pb.CONVERSATION_STATUS_CLOSED
        ),
        "doctor",
        S.NOT_FOUND,
        field="conversation_id",
    ),
    Case(
        "ListConversations",
        "a patient with none",
        pb.ListConversationsRequest(),
        "patient",
        S.OK,
        check=listed_nothing,
    ),
    Case(
        "ListConversations",
        "a page too large",
        pb.ListConversationsRequest(page_size=500),
        "doctor",
        S.INVALID_ARGUMENT,
        field="page_size",
    ),
    Case(
        "ListConversations",
        "a cursor it never gave",
        pb.ListConversationsRequest(cursor="yesterday"),
        "doctor",
        S.INVALID_ARGUMENT,
        field="cursor",
    ),
    Case(
        "ListConversations",
        "an administrator has no mailbox",
        pb.ListConversationsRequest(),
        "admin",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ListConversations",
        "a cursor with digits that are not ASCII",
        pb.ListConversationsRequest(cursor="\u00b2\u00b3:x"),
        "patient",
        S.INVALID_ARGUMENT,
        field="cursor",
    ),
    Case(
        "ListConversations",
        "a cursor past any date",
        pb.ListConversationsRequest(cursor="9" * 40 + ":x"),
        "patient",
        S.INVALID_ARGUMENT,
        field="cursor",
    ),
    Case(
        "OpenConversation",
        "a file name that reverses its own text",
        opening(
            attachments=[pb.NewAttachment(upload=pb.Upload(filename="a\u202efdp.exe", content=PDF))]
        ),
        "doctor",
        S.INVALID_ARGUMENT,
        field="attachments.0.filename",
    ),
    Case(
        "GetConversation",
        "a conversation that does not exist",
        pb.GetConversationRequest(conversation_id=UNKNOWN),
        "patient",
        S.NOT_FOUND,
        field="conversation_id",
    ),
    Case(
        "GetConversation",
        "an id far too long",
        pb.GetConversationRequest(conversation_id="x" * 65),
        "patient",
        S.INVALID_ARGUMENT,
        field="conversation_id",
    ),
    Case(
        "GetAttachment",
        "in a conversation that does not exist",
        pb.GetAttachmentRequest(conversation_id=UNKNOWN, attachment_id=UNKNOWN),
        "patient",
        S.NOT_FOUND,
        field="conversation_id",
    ),
    Case(
        "FileAttachment",
        "from a conversation that does not exist",
        pb.FileAttachmentRequest(
            conversation_id=UNKNOWN, attachment_id=UNKNOWN, type_code="11488-4"
        ),
        "doctor",
        S.NOT_FOUND,
        field="conversation_id",
    ),
    Case(
        "BlockCounterpart",
        "in a conversation that does not exist",
        pb.BlockCounterpartRequest(conversation_id=UNKNOWN),
        "patient",
        S.NOT_FOUND,
        field="conversation_id",
    ),
]
SLOW = Case(
    "ListConversations",
    "a patient with none",
    pb.ListConversationsRequest(),
    "patient",
    S.OK,
    check=listed_nothing,
)
