"""The patient's agenda: appointments shared with the professionals they choose, its iCalendar
export, and the prevention reminders computed from their age and sex.

Each call carries the caller's token to the agenda service, which asks consent who stands
where: the patient (and whoever acts for them), or a professional not blocked, who sees only
what is shared with them and proposes appointments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field

from dmp.agenda.v1 import agenda_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso, stamp
from dmp_gateway.security import Caller

router = APIRouter(tags=["agenda"])

AppointmentStatus = Literal["confirmed", "proposed", "declined", "cancelled"]
ReminderStatus = Literal["upcoming", "due", "done", "postponed"]
Category = Literal["vaccination", "examen_enfant", "dentaire", "depistage"]
# What the agenda refuses, beyond what every route shares.
READS = problems.responses(
    403,
    404,
    409,
    422,
    types={
        403: ("forbidden", "access-denied"),
        404: ("not-found", "dossier-not-found", "patient-not-found"),
        409: ("dossier-closed",),
        422: ("validation-error", "invalid-ins"),
    },
)
WRITES = problems.responses(
    403,
    404,
    409,
    422,
    types={
        403: ("forbidden", "access-denied", "read-only"),
        404: ("not-found", "dossier-not-found", "appointment-not-found"),
        409: ("dossier-closed", "appointment-closed", "contention"),
        422: ("validation-error", "invalid-ins", "invalid-rpps", "unknown-professional"),
    },
)
REMINDER_WRITES = problems.responses(
    403,
    404,
    409,
    422,
    types={
        403: ("forbidden", "access-denied", "read-only"),
        404: (
            "not-found",
            "dossier-not-found",
            "patient-not-found",
            "reminder-not-found",
            "document-not-found",
        ),
        409: ("dossier-closed", "contention"),
        422: ("validation-error", "invalid-ins"),
    },
)

PREVENTION = problems.responses(
    403,
    404,
    409,
    422,
    types={
        403: ("forbidden", "access-denied", "read-only"),
        404: ("not-found", "dossier-not-found", "patient-not-found"),
        409: ("dossier-closed", "contention"),
        422: ("validation-error", "invalid-ins"),
    },
)


class AppointmentIn(BaseModel):
    title: str = Field(max_length=200)
    starts_at: AwareDatetime = Field(description="RFC 3339, with its offset")
    ends_at: AwareDatetime = Field(description="after starts_at, a week later at most")
    location: str | None = Field(None, max_length=200)
    shared_with: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="RPPS of the professionals who see it (the patient side; a professional's "
        "proposal is shared with them)",
    )
    notes: str | None = Field(None, max_length=2000)
    professional: str | None = Field(None, description="RPPS of the professional it is with")


class AppointmentPatch(BaseModel):
    title: str | None = Field(None, max_length=200)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    location: str | None = Field(None, max_length=200)
    shared_with: list[str] | None = Field(None, max_length=20)
    notes: str | None = Field(None, max_length=2000)


class AppointmentOut(BaseModel):
    id: str
    title: str
    starts_at: str
    ends_at: str
    location: str | None = None
    professional: str | None = None
    shared_with: list[str]
    status: AppointmentStatus
    proposed_by: str = Field(description="patient, or the RPPS of the professional")
    notes: str | None = None
    created_at: str
    updated_at: str


class Appointments(BaseModel):
    items: list[AppointmentOut] = Field(description="by start time")


class ReminderOut(BaseModel):
    id: str
    rule_id: str
    act: str
    category: Category
    due_from: str = Field(description="YYYY-MM-DD")
    due_until: str = Field(description="YYYY-MM-DD, included")
    status: ReminderStatus
    reason: str
    source: str
    document_id: str | None = None
    postponed_until: str | None = None


class Reminders(BaseModel):
    items: list[ReminderOut]
    prevention_messages: bool
    rules_version: str


class DoneIn(BaseModel):
    document_id: str | None = Field(
        None, max_length=64, description="a document of the DMP, e.g. a vaccination note"
    )


class PostponeIn(BaseModel):
    until: str = Field(max_length=10, description="YYYY-MM-DD, within a year")


class PreventionIn(BaseModel):
    messages: bool


class Prevention(BaseModel):
    messages: bool


def _appointment(a: pb.Appointment) -> AppointmentOut:
    return AppointmentOut(
        id=a.id,
        title=a.title,
        starts_at=iso(a.starts_at),
        ends_at=iso(a.ends_at),
        location=a.location or None,
        professional=a.professional or None,
        shared_with=list(a.shared_with),
        status=a.status,  # type: ignore[arg-type]
        proposed_by=a.proposed_by,
        notes=a.notes or None,
        created_at=iso(a.created_at),
        updated_at=iso(a.updated_at),
    )


def _reminder(r: pb.Reminder) -> ReminderOut:
    return ReminderOut(
        id=r.id,
        rule_id=r.rule_id,
        act=r.act,
        category=r.category,  # type: ignore[arg-type]
        due_from=r.due_from,
        due_until=r.due_until,
        status=r.status,  # type: ignore[arg-type]
        reason=r.reason,
        source=r.source,
        document_id=r.document_id or None,
        postponed_until=r.postponed_until or None,
    )


@router.get(
    "/v1/dossiers/{ins}/appointments",
    response_model=Appointments,
    response_model_exclude_none=True,
    summary="The appointments in a period (a professional: those shared with them)",
    responses=READS,
)
async def list_appointments(
    ins: str,
    request: Request,
    who: Caller,
    since: Annotated[datetime | None, Query(alias="from", description="ending after")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="starting before")] = None,
) -> Appointments:
    query = pb.ListAppointmentsRequest(ins=ins)
    if since is not None:
        stamp(getattr(query, "from"), since, "from")
    if until is not None:
        stamp(query.to, until, "to")
    ds = downstream(request)
    resp = await ds.call(ds.agenda.ListAppointments, query, token=who.token)
    return Appointments(items=[_appointment(a) for a in resp.items])


@router.post(
    "/v1/dossiers/{ins}/appointments",
    status_code=201,
    response_model=AppointmentOut,
    response_model_exclude_none=True,
    summary="Add an appointment (the patient side) or propose one (a professional)",
    responses=WRITES,
)
async def create_appointment(
    ins: str, body: AppointmentIn, request: Request, who: Caller
) -> AppointmentOut:
    create = pb.CreateAppointmentRequest(
        ins=ins,
        title=body.title,
        location=body.location or "",
        shared_with=body.shared_with,
        notes=body.notes or "",
        professional=body.professional or "",
    )
    stamp(create.starts_at, body.starts_at, "starts_at")
    stamp(create.ends_at, body.ends_at, "ends_at")
    ds = downstream(request)
    resp = await ds.call(ds.agenda.CreateAppointment, create, token=who.token)
    return _appointment(resp.appointment)


@router.patch(
    "/v1/dossiers/{ins}/appointments/{appointment_id}",
    response_model=AppointmentOut,
    response_model_exclude_none=True,
    summary="Move, rename or change the sharing of an appointment (the patient side)",
    responses=WRITES,
)
async def update_appointment(
    ins: str, appointment_id: str, body: AppointmentPatch, request: Request, who: Caller
) -> AppointmentOut:
    update = pb.UpdateAppointmentRequest(ins=ins, id=appointment_id)
    if body.title is not None:
        update.title = body.title
    if body.location is not None:
        update.location = body.location
    if body.notes is not None:
        update.notes = body.notes
    if body.shared_with is not None:
        update.shared_with.CopyFrom(pb.Sharing(rpps=body.shared_with))
    if body.starts_at is not None:
        stamp(update.starts_at, body.starts_at, "starts_at")
    if body.ends_at is not None:
        stamp(update.ends_at, body.ends_at, "ends_at")
    ds = downstream(request)
    resp = await ds.call(
        ds.agenda.UpdateAppointment,
        update,
        token=who.token,
        fields={"shared_with.rpps": "shared_with", "id": "appointment_id"},
    )
    return _appointment(resp.appointment)


# accept · decline · cancel: one handler each, registered alike.
STATUS_CHANGES = {
    "accept": (pb.STATUS_CHANGE_ACCEPT, "Accept a professional's proposal (the patient side)"),
    "decline": (pb.STATUS_CHANGE_DECLINE, "Decline a professional's proposal (the patient side)"),
    "cancel": (
        pb.STATUS_CHANGE_CANCEL,
        "Cancel an appointment (the patient side, or the professional who proposed it)",
    ),
}


def _status_route(change: pb.StatusChange.ValueType) -> Callable[..., Awaitable[AppointmentOut]]:
    async def change_status(
        ins: str, appointment_id: str, request: Request, who: Caller
    ) -> AppointmentOut:
        ds = downstream(request)
        resp = await ds.call(
            ds.agenda.ChangeAppointmentStatus,
            pb.ChangeAppointmentStatusRequest(ins=ins, id=appointment_id, change=change),
            token=who.token,
            fields={"id": "appointment_id"},
        )
        return _appointment(resp.appointment)

    return change_status


for _name, (_change, _summary) in STATUS_CHANGES.items():
    router.add_api_route(
        f"/v1/dossiers/{{ins}}/appointments/{{appointment_id}}/{_name}",
        _status_route(_change),
        methods=["POST"],
        name=f"{_name}_appointment",
        response_model=AppointmentOut,
        response_model_exclude_none=True,
        summary=_summary,
        responses=WRITES,
    )


@router.get(
    "/v1/dossiers/{ins}/agenda.ics",
    response_class=Response,
    summary="The agenda as an iCalendar file (RFC 5545): appointments and reminders",
    responses={
        200: {"content": {"text/calendar": {"schema": {"type": "string"}}}},
        **READS,
    },
)
async def export_calendar(ins: str, request: Request, who: Caller) -> Response:
    ds = downstream(request)
    resp = await ds.call(
        ds.agenda.ExportCalendar, pb.ExportCalendarRequest(ins=ins), token=who.token
    )
    return Response(
        resp.calendar,
        media_type="text/calendar; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="agenda.ics"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/v1/dossiers/{ins}/reminders",
    response_model=Reminders,
    response_model_exclude_none=True,
    summary="The prevention reminders due and upcoming, each with why it is shown",
    responses=READS,
)
async def list_reminders(ins: str, request: Request, who: Caller) -> Reminders:
    ds = downstream(request)
    resp = await ds.call(ds.agenda.ListReminders, pb.ListRemindersRequest(ins=ins), token=who.token)
    return Reminders(
        items=[_reminder(r) for r in resp.items],
        prevention_messages=resp.prevention_messages,
        rules_version=resp.rules_version,
    )


@router.post(
    "/v1/dossiers/{ins}/reminders/{reminder_id}/done",
    response_model=ReminderOut,
    response_model_exclude_none=True,
    summary="Mark a reminder done, optionally with a document of the DMP",
    responses=REMINDER_WRITES,
)
async def reminder_done(
    ins: str, reminder_id: str, request: Request, who: Caller, body: DoneIn | None = None
) -> ReminderOut:
    ds = downstream(request)
    resp = await ds.call(
        ds.agenda.MarkReminderDone,
        pb.MarkReminderDoneRequest(
            ins=ins, id=reminder_id, document_id=(body.document_id if body else None) or ""
        ),
        token=who.token,
        fields={"id": "reminder_id"},
    )
    return _reminder(resp.reminder)


@router.post(
    "/v1/dossiers/{ins}/reminders/{reminder_id}/postpone",
    response_model=ReminderOut,
    response_model_exclude_none=True,
    summary="Postpone a reminder to a date (within a year)",
    responses=REMINDER_WRITES,
)
async def reminder_postpone(
    ins: str, reminder_id: str, body: PostponeIn, request: Request, who: Caller
) -> ReminderOut:
    ds = downstream(request)
    resp = await ds.call(
        ds.agenda.PostponeReminder,
        pb.PostponeReminderRequest(ins=ins, id=reminder_id, until=body.until),
        token=who.token,
        fields={"id": "reminder_id"},
    )
    return _reminder(resp.reminder)


@router.put(
    "/v1/dossiers/{ins}/prevention",
    response_model=Prevention,
    summary="Prevention messages on or off (the reminders stay in the agenda)",
    responses=PREVENTION,
)
async def set_prevention(ins: str, body: PreventionIn, request: Request, who: Caller) -> Prevention:
    ds = downstream(request)
    resp = await ds.call(
        ds.agenda.SetPreventionMessages,
        pb.SetPreventionMessagesRequest(ins=ins, messages=body.messages),
        token=who.token,
    )
    return Prevention(messages=resp.prevention_messages)
