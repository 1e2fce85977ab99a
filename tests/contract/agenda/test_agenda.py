"""agenda's gRPC contract, the service alone: every peer it asks (consent, identity, dossier)
is away, so what is refused before any question is asked is refused here exactly, and what
needs consent's word is UNAVAILABLE, never an answer made up."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import StatusCode as S

from dmp.agenda.v1 import agenda_pb2 as pb
from dmp.agenda.v1 import agenda_pb2_grpc
from dmp_stack.contract import DOCTOR_RPPS, PATIENT_INS, TESTS, Case

globals().update(TESTS)

SERVICE = "agenda"
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["AgendaService"]
STUB = agenda_pb2_grpc.AgendaServiceStub
PUBLIC: set[str] = set()
UNKNOWN = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def at(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


SOON = 4_102_444_800  # 2100-01-01: too far ahead
NOW = 1_900_000_000  # 2030-03-17


def adding(**fields: object) -> pb.CreateAppointmentRequest:
    given: dict[str, object] = {
        "ins": PATIENT_INS,
        "title": "Dentiste",
        "starts_at": at(NOW),
        "ends_at": at(NOW + 1800),
    }
    return pb.CreateAppointmentRequest(**{**given, **fields})


CASES = [
    Case(
        "ListAppointments",
        "a malformed INS",
        pb.ListAppointmentsRequest(ins="1"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "ListAppointments",
        "a period that ends before it starts",
        pb.ListAppointmentsRequest(ins=PATIENT_INS, to=at(NOW), **{"from": at(NOW + 1)}),
        "patient",
        S.INVALID_ARGUMENT,
        field="to",
    ),
    Case(
        "ListAppointments",
        "an insurer has no agenda to read",
        pb.ListAppointmentsRequest(ins=PATIENT_INS),
        "insurer",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ListAppointments",
        "consent away: no decision, nothing listed",
        pb.ListAppointmentsRequest(ins=PATIENT_INS),
        "doctor",
        S.UNAVAILABLE,
    ),
    Case(
        "CreateAppointment",
        "no title",
        adding(title="  "),
        "patient",
        S.INVALID_ARGUMENT,
        field="title",
    ),
    Case(
        "CreateAppointment",
        "a title too long",
        adding(title="x" * 201),
        "patient",
        S.INVALID_ARGUMENT,
        field="title",
    ),
    Case(
        "CreateAppointment",
        "no start",
        adding(starts_at=None),
        "patient",
        S.INVALID_ARGUMENT,
        field="starts_at",
    ),
    Case(
        "CreateAppointment",
        "ends before it starts",
        adding(ends_at=at(NOW - 60)),
        "patient",
        S.INVALID_ARGUMENT,
        field="ends_at",
    ),
    Case(
        "CreateAppointment",
        "too far ahead",
        adding(starts_at=at(SOON), ends_at=at(SOON + 60)),
        "patient",
        S.INVALID_ARGUMENT,
        field="starts_at",
    ),
    Case(
        "CreateAppointment",
        "a malformed RPPS to share with",
        adding(shared_with=[DOCTOR_RPPS, "10000000000"]),
        "patient",
        S.INVALID_ARGUMENT,
        field="shared_with.1",
        problem="invalid-rpps",
    ),
    Case(
        "CreateAppointment", "an insurer proposes nothing", adding(), "insurer", S.PERMISSION_DENIED
    ),
    Case("CreateAppointment", "consent away: nothing written", adding(), "doctor", S.UNAVAILABLE),
    Case(
        "UpdateAppointment",
        "a title too long",
        pb.UpdateAppointmentRequest(ins=PATIENT_INS, id=UNKNOWN, title="x" * 201),
        "patient",
        S.INVALID_ARGUMENT,
        field="title",
    ),
    Case(
        "UpdateAppointment",
        "consent away",
        pb.UpdateAppointmentRequest(ins=PATIENT_INS, id=UNKNOWN, title="Kiné"),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "ChangeAppointmentStatus",
        "no change named",
        pb.ChangeAppointmentStatusRequest(ins=PATIENT_INS, id=UNKNOWN),
        "patient",
        S.INVALID_ARGUMENT,
        field="change",
    ),
    Case(
        "ChangeAppointmentStatus",
        "consent away",
        pb.ChangeAppointmentStatusRequest(
            ins=PATIENT_INS, id=UNKNOWN, change=pb.STATUS_CHANGE_CANCEL
        ),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "ExportCalendar",
        "a malformed INS",
        pb.ExportCalendarRequest(ins="x"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "ExportCalendar",
        "consent away",
        pb.ExportCalendarRequest(ins=PATIENT_INS),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "ListReminders",
        "an insurer reads no reminders",
        pb.ListRemindersRequest(ins=PATIENT_INS),
        "insurer",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ListReminders",
        "consent away",
        pb.ListRemindersRequest(ins=PATIENT_INS),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "MarkReminderDone",
        "a document id too long",
        pb.MarkReminderDoneRequest(ins=PATIENT_INS, id="grippe~0", document_id="x" * 65),
        "patient",
        S.INVALID_ARGUMENT,
        field="document_id",
    ),
    Case(
        "MarkReminderDone",
        "no reminder named",
        pb.MarkReminderDoneRequest(ins=PATIENT_INS),
        "patient",
        S.INVALID_ARGUMENT,
        field="id",
    ),
    Case(
        "MarkReminderDone",
        "consent away",
        pb.MarkReminderDoneRequest(ins=PATIENT_INS, id="grippe~0"),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "PostponeReminder",
        "not a date",
        pb.PostponeReminderRequest(ins=PATIENT_INS, id="grippe~0", until="demain"),
        "patient",
        S.INVALID_ARGUMENT,
        field="until",
    ),
    Case(
        "PostponeReminder",
        "a date already past",
        pb.PostponeReminderRequest(ins=PATIENT_INS, id="grippe~0", until="2001-01-01"),
        "patient",
        S.INVALID_ARGUMENT,
        field="until",
    ),
    Case(
        "PostponeReminder",
        "more than a year ahead",
        pb.PostponeReminderRequest(ins=PATIENT_INS, id="grippe~0", until="2999-01-01"),
        "patient",
        S.INVALID_ARGUMENT,
        field="until",
    ),
    Case(
        "SetPreventionMessages",
        "an insurer decides nothing for the patient",
        pb.SetPreventionMessagesRequest(ins=PATIENT_INS),
        "insurer",
        S.PERMISSION_DENIED,
    ),
    Case(
        "SetPreventionMessages",
        "consent away",
        pb.SetPreventionMessagesRequest(ins=PATIENT_INS),
        "patient",
        S.UNAVAILABLE,
    ),
]
# Read from the database before consent is asked: the patient's known birth date.
SLOW = Case(
    "ListReminders",
    "the database, then consent away",
    pb.ListRemindersRequest(ins=PATIENT_INS),
    "patient",
    S.UNAVAILABLE,
)
