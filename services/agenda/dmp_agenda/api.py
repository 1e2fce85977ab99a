"""Agenda's gRPC servicer: proto ⇄ domain, the calls to the services that decide, and the store.
Every call to another service carries the caller's own token (consent says whether they may
act in this space, identity whether a professional exists, the dossier whether a document is
theirs to name), except the birth date, which the agenda reads with its own service account."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import grpc
import icalendar
from uuid6 import uuid7

from dmp.agenda.v1 import agenda_pb2 as pb
from dmp.agenda.v1 import agenda_pb2_grpc
from dmp.consent.v1 import consent_pb2, consent_pb2_grpc
from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp_agenda import domain
from dmp_agenda.config import AgendaSettings
from dmp_agenda.domain import Change, Mark, Occurrence, Person, PreventionRules, Side, Status
from dmp_agenda.events import AgendaEvents
from dmp_agenda.store import AgendaStore, look_again
from dmp_kit.access import raise_if_denied
from dmp_kit.auth import Principal, caller
from dmp_kit.bus import EventBus
from dmp_kit.clock import Clock
from dmp_kit.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from dmp_kit.identifiers import validate_ins, validate_rpps
from dmp_kit.mongo import Document
from dmp_kit.outbox import OutboxRelay, change_document, new_document_with_events
from dmp_kit.proto import timestamp
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.status import error_from_rpc
from dmp_kit.service_auth import ServiceTokens

T = TypeVar("T")
# The patients' days are French: a reminder is due from midnight in Paris.
PARIS = ZoneInfo("Europe/Paris")
MAX_ID = 64
CHANGES = {
    pb.STATUS_CHANGE_ACCEPT: Change.ACCEPT,
    pb.STATUS_CHANGE_DECLINE: Change.DECLINE,
    pb.STATUS_CHANGE_CANCEL: Change.CANCEL,
}
CHANGE_EVENTS = {Change.ACCEPT: "accepted", Change.DECLINE: "declined", Change.CANCEL: "cancelled"}
# Stable UIDs of the iCalendar export, derived from the patient and the item, not reversible.
UID_NAMESPACE = uuid.UUID("5f0c3b5e-5d1c-4c7a-9a53-7c1d7a0e2b41")
ICS_STATUS = {
    Status.CONFIRMED: "CONFIRMED",
    Status.PROPOSED: "TENTATIVE",
    Status.CANCELLED: "CANCELLED",
}


def today_in_paris(clock: Clock) -> date:
    return clock.now().astimezone(PARIS).date()


class Downstream:
    """The services the agenda asks, each with the caller's token."""

    def __init__(self, settings: AgendaSettings, channel: Callable[[str], Any]) -> None:
        self.deadline = settings.grpc_deadline_seconds
        self.identity = identity_pb2_grpc.IdentityServiceStub(channel(settings.identity_addr))
        self.consent = consent_pb2_grpc.ConsentServiceStub(channel(settings.consent_addr))
        self.dossier = dossier_pb2_grpc.DossierServiceStub(channel(settings.dossier_addr))

    async def call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        try:
            return await method(request, **call_options(self.deadline))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc


class BirthDates:
    """A patient's birth date from identity, asked with the agenda's own service account (role
    patient_birth_reader: the date and the account's status, nothing else)."""

    def __init__(self, downstream: Downstream, tokens: ServiceTokens) -> None:
        self.ds = downstream
        self.tokens = tokens

    async def __call__(self, ins: str) -> str:
        async def ask(token: str) -> identity_pb2.LookupPatientResponse:
            answer: identity_pb2.LookupPatientResponse = await self.ds.identity.LookupPatient(
                identity_pb2.LookupPatientRequest(ins=ins),
                **call_options(self.ds.deadline, token=token),
            )
            return answer

        try:
            found = await self.tokens.call(ask)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        return found.patient.birth_date


class People:
    """The people the agenda knows: birth date and sex, fetched once."""

    def __init__(self, store: AgendaStore, birth_dates: BirthDates, clock: Clock) -> None:
        self.store = store
        self.birth_dates = birth_dates
        self.clock = clock

    async def learn(self, ins: str) -> Document:
        birth = await self.birth_dates(ins)
        if not birth:
            raise NotFound("no such patient", field="ins", slug="patient-not-found")
        await self.store.know(
            ins, birth, domain.sex_of_ins(ins), self.clock.now(), today_in_paris(self.clock)
        )
        found = await self.store.patient(ins)
        assert found is not None
        return found

    async def get(self, ins: str) -> Document:
        found = await self.store.patient(ins)
        if found is None or not found.get("birth_date"):
            found = await self.learn(ins)
        return found


def person_of(doc: Document) -> Person:
    return Person(date.fromisoformat(doc["birth_date"]), doc.get("sex", ""))


def marks_of(doc: Document) -> dict[str, Mark]:
    out = {}
    for key, mark in doc.get("marks", {}).items():
        done = mark.get("done_on")
        postponed = mark.get("postponed_until")
        out[key] = Mark(
            date.fromisoformat(done) if done else None,
            mark.get("document_id", ""),
            date.fromisoformat(postponed) if postponed else None,
        )
    return out


@dataclass(frozen=True)
class Standing:
    """How the caller stands to this patient's agenda, and whether it may be changed now."""

    side: Side
    writable: bool


class AgendaServicer(agenda_pb2_grpc.AgendaServiceServicer):
    def __init__(
        self,
        settings: AgendaSettings,
        store: AgendaStore,
        rules: PreventionRules,
        clock: Clock,
        relay: OutboxRelay,
        bus: EventBus,
        downstream: Downstream,
        people: People,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules
        self.clock = clock
        self.relay = relay
        self.bus = bus
        self.ds = downstream
        self.people = people
        self.events = AgendaEvents(clock)

    # who may do what ---------------------------------------------------------------------

    async def _standing(self, who: Principal, ins: str) -> Standing:
        """Consent's word, with the caller's token: the patient in their own space (open, or
        closed: then read only); a legal representative or a trusted person the patient named
        (with their scope); a professional the patient has not blocked, in an open space."""
        if who.kind == "patient" and who.ins == ins:
            verdict = await self._may_message(ins)
            if verdict.allowed:
                return Standing(Side.OWNER, True)
            if verdict.reason == "dossier_closed":
                return Standing(Side.OWNER, False)
            raise_if_denied(verdict)
        if who.kind == "patient":
            listed = await self.ds.call(
                self.ds.consent.ListRepresented, consent_pb2.ListRepresentedRequest()
            )
            for entry in listed.represented:
                if entry.ins != ins:
                    continue
                if entry.relation == consent_pb2.RELATION_LEGAL_REPRESENTATIVE:
                    return Standing(Side.OWNER, True)  # listed while the space is open only
                if entry.status == consent_pb2.TRUST_STATUS_ACTIVE:
                    known = await self.store.patient(ins)
                    if known is None or known.get("dossier_status") != "open":
                        raise Conflict("the DMP is closed", slug="dossier-closed")
                    manages = entry.scope == consent_pb2.TRUST_SCOPE_MANAGE
                    return Standing(Side.OWNER if manages else Side.READER, True)
            raise PermissionDenied("not allowed: not_your_dossier", slug="access-denied")
        if who.kind == "professional":
            raise_if_denied(await self._may_message(ins))
            return Standing(Side.PROFESSIONAL, True)
        raise PermissionDenied("not allowed: not_a_care_actor", slug="access-denied")

    async def _may_message(self, ins: str) -> consent_pb2.MayMessageResponse:
        """Consent's verdict on a care actor in the patient's space: open, and not blocked."""
        return await self.ds.call(
            self.ds.consent.MayMessage, consent_pb2.MayMessageRequest(ins=ins)
        )

    async def _writer(self, who: Principal, ins: str) -> Standing:
        standing = await self._standing(who, ins)
        if not standing.writable:
            raise Conflict("the DMP is closed", slug="dossier-closed")
        return standing

    async def _patient_side(self, who: Principal, ins: str, *, write: bool) -> Standing:
        standing = await (self._writer(who, ins) if write else self._standing(who, ins))
        if standing.side is Side.PROFESSIONAL:
            raise PermissionDenied("the patient's side only", slug="access-denied")
        if write:
            domain.may_write(standing.side)
        return standing

    # appointments ------------------------------------------------------------------------

    async def ListAppointments(
        self, request: pb.ListAppointmentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAppointmentsResponse:
        who = caller()
        ins = validate_ins(request.ins)
        # `from` is a Python keyword: the field is read by name.
        start = _when(getattr(request, "from")) if request.HasField("from") else None
        end = _when(request.to) if request.HasField("to") else None
        if start is not None and end is not None and end <= start:
            raise InvalidArgument("to comes after from", field="to")
        standing = await self._standing(who, ins)
        docs = await self.store.appointments_of(
            ins, start, end, self.settings.appointments_max_listed
        )
        shown = [d for d in docs if domain.may_see(standing.side, who.rpps, d["shared_with"])]
        # Traced before it is answered (fail closed).
        await self.bus.publish_event(self.events.audit(who, ins, "search", "appointments"))
        return pb.ListAppointmentsResponse(items=[_appointment(d) for d in shown])

    async def CreateAppointment(
        self, request: pb.CreateAppointmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateAppointmentResponse:
        who = caller()
        ins = validate_ins(request.ins)
        title = domain.title(request.title)
        location = domain.free_text(request.location, "location", domain.MAX_LOCATION)
        notes = domain.free_text(request.notes, "notes", domain.MAX_NOTES)
        starts_at, ends_at = _period(request, self.clock.now(), self.settings)
        shared = domain.sharing(list(request.shared_with))
        professional = (
            validate_rpps(request.professional, field="professional")
            if request.professional
            else ""
        )
        standing = await self._writer(who, ins)
        if standing.side is Side.PROFESSIONAL:
            # A proposal: shared with its proposer, who it is with.
            status, proposed_by, professional = Status.PROPOSED, who.rpps, who.rpps
            shared, change = [who.rpps], "proposed"
        else:
            domain.may_write(standing.side)
            status, proposed_by, change = Status.CONFIRMED, "patient", "created"
            await self._professionals_exist(
                [("professional", professional)] if professional else []
            )
            await self._professionals_exist([(f"shared_with.{i}", r) for i, r in enumerate(shared)])
        now = self.clock.now()
        appointment_id = str(uuid7())
        doc: Document = {
            "_id": appointment_id,
            "ins": ins,
            "title": title,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "location": location,
            "professional": professional,
            "shared_with": shared,
            "status": status.value,
            "proposed_by": proposed_by,
            "notes": notes,
            "created_at": now,
            "updated_at": now,
        }
        await self.store.appointments.insert_one(
            new_document_with_events(
                doc,
                self.events.appointment(who, ins, appointment_id, change, shared),
                self.events.audit(who, ins, "create", f"appointment={appointment_id}"),
            )
        )
        self.relay.kick(self.store.appointments, appointment_id)
        return pb.CreateAppointmentResponse(appointment=_appointment(doc))

    async def _professionals_exist(self, given: list[tuple[str, str]]) -> None:
        """Each RPPS names a professional of the directory (asked with the caller's token)."""
        for field, rpps in given:
            try:
                await self.ds.call(
                    self.ds.identity.LookupProfessional,
                    identity_pb2.LookupProfessionalRequest(rpps=rpps),
                )
            except NotFound as exc:
                raise InvalidArgument(
                    "no professional has this RPPS", field=field, slug="unknown-professional"
                ) from exc

    async def _appointment_for(self, who: Principal, ins: str, appointment_id: str) -> Document:
        if not appointment_id or len(appointment_id) > MAX_ID:
            raise InvalidArgument("id is required", field="id")
        doc = await self.store.appointment(ins, appointment_id)
        if doc is None:
            raise NotFound("no such appointment", field="id", slug="appointment-not-found")
        return doc

    async def UpdateAppointment(
        self, request: pb.UpdateAppointmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateAppointmentResponse:
        who = caller()
        ins = validate_ins(request.ins)
        fields: Document = {}
        if request.HasField("title"):
            fields["title"] = domain.title(request.title)
        if request.HasField("location"):
            fields["location"] = domain.free_text(request.location, "location", domain.MAX_LOCATION)
        if request.HasField("notes"):
            fields["notes"] = domain.free_text(request.notes, "notes", domain.MAX_NOTES)
        shared: list[str] | None = None
        if request.HasField("shared_with"):
            shared = domain.sharing(list(request.shared_with.rpps))
        standing = await self._patient_side(who, ins, write=True)
        doc = await self._appointment_for(who, ins, request.id)
        domain.may_update(Status(doc["status"]))
        starts_at = (
            request.starts_at.ToDatetime(tzinfo=UTC)
            if request.HasField("starts_at")
            else doc["starts_at"].replace(tzinfo=UTC)
        )
        ends_at = (
            request.ends_at.ToDatetime(tzinfo=UTC)
            if request.HasField("ends_at")
            else doc["ends_at"].replace(tzinfo=UTC)
        )
        if request.HasField("starts_at") or request.HasField("ends_at"):
            domain.period(
                starts_at, ends_at, self.clock.now(), self.settings.appointments_years_ahead
            )
            fields["starts_at"], fields["ends_at"] = starts_at, ends_at
        if shared is not None:
            new = [r for r in shared if r not in doc["shared_with"]]
            await self._professionals_exist([(f"shared_with.{shared.index(r)}", r) for r in new])
            # A proposer keeps seeing what they proposed.
            if doc["proposed_by"] not in ("patient", *shared):
                shared = [*shared, doc["proposed_by"]]
            fields["shared_with"] = shared
        assert standing.side is Side.OWNER
        now = self.clock.now()

        def update(current: Document | None) -> Document | None:
            if current is None:
                return None
            domain.may_update(Status(current["status"]))
            return {**fields, "updated_at": now}

        shared_now = fields.get("shared_with", doc["shared_with"])
        written = await self._change(who, doc, update, "updated", shared_now)
        return pb.UpdateAppointmentResponse(appointment=_appointment(written))

    async def ChangeAppointmentStatus(
        self, request: pb.ChangeAppointmentStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangeAppointmentStatusResponse:
        who = caller()
        ins = validate_ins(request.ins)
        change = CHANGES.get(request.change)
        if change is None:
            raise InvalidArgument("change is accept, decline or cancel", field="change")
        standing = await self._writer(who, ins)
        doc = await self._appointment_for(who, ins, request.id)
        if not domain.may_see(standing.side, who.rpps, doc["shared_with"]):
            raise NotFound("no such appointment", field="id", slug="appointment-not-found")
        status = domain.new_status(
            Status(doc["status"]), change, standing.side, who.rpps, doc["proposed_by"]
        )
        now = self.clock.now()

        def update(current: Document | None) -> Document | None:
            if current is None:
                return None
            domain.new_status(
                Status(current["status"]), change, standing.side, who.rpps, doc["proposed_by"]
            )
            return {"status": status.value, "updated_at": now}

        written = await self._change(who, doc, update, CHANGE_EVENTS[change], doc["shared_with"])
        return pb.ChangeAppointmentStatusResponse(appointment=_appointment(written))

    async def _change(
        self,
        who: Principal,
        doc: Document,
        update: Callable[[Document | None], Document | None],
        change: str,
        shared_with: list[str],
    ) -> Document:
        """One appointment changed as `update` decides on it as it is, with its event and its
        trace in the same write."""
        ins, appointment_id = doc["ins"], doc["_id"]
        written = await change_document(
            self.store.appointments,
            appointment_id,
            update,
            self.events.appointment(who, ins, appointment_id, change, shared_with),
            self.events.audit(who, ins, "update", f"appointment={appointment_id}"),
        )
        if written is None:
            raise NotFound("no such appointment", field="id", slug="appointment-not-found")
        self.relay.kick(self.store.appointments, appointment_id)
        return written

    async def ExportCalendar(
        self, request: pb.ExportCalendarRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportCalendarResponse:
        who = caller()
        ins = validate_ins(request.ins)
        await self._patient_side(who, ins, write=False)
        docs = await self.store.appointments_of(
            ins, None, None, self.settings.appointments_max_listed
        )
        person_doc = await self.people.get(ins)
        today = today_in_paris(self.clock)
        shown = domain.reminders(
            self.rules, person_of(person_doc), today, self.settings.reminders_horizon_days
        )
        marks = marks_of(person_doc)
        await self.bus.publish_event(self.events.audit(who, ins, "read", "calendar"))
        return pb.ExportCalendarResponse(
            calendar=calendar_of(ins, docs, shown, marks, today, self.clock.now())
        )

    # reminders ---------------------------------------------------------------------------

    async def ListReminders(
        self, request: pb.ListRemindersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRemindersResponse:
        who = caller()
        ins = validate_ins(request.ins)
        known = await self.store.patient(ins)
        await self._patient_side(who, ins, write=False)
        doc = known if known and known.get("birth_date") else await self.people.learn(ins)
        today = today_in_paris(self.clock)
        shown = domain.reminders(
            self.rules, person_of(doc), today, self.settings.reminders_horizon_days
        )
        marks = marks_of(doc)
        await self.bus.publish_event(self.events.audit(who, ins, "read", "reminders"))
        return pb.ListRemindersResponse(
            items=[_reminder(o, marks.get(o.id), today) for o in shown],
            prevention_messages=bool(doc.get("prevention_messages", True)),
            rules_version=self.rules.version,
        )

    async def _occurrence(self, who: Principal, ins: str, reminder_id: str) -> Occurrence:
        if not reminder_id or len(reminder_id) > MAX_ID:
            raise InvalidArgument("id is required", field="id")
        await self._patient_side(who, ins, write=True)
        doc = await self.people.get(ins)
        return domain.occurrence_by_id(self.rules, person_of(doc).birth_date, reminder_id)

    async def _mark(
        self, who: Principal, ins: str, occurrence: Occurrence, mark: Document
    ) -> pb.Reminder:
        def update(current: Document | None) -> Document | None:
            if current is None:
                return None
            # a postponement in place of a done mark brings the reminder back: looked at again
            marks = {**current.get("marks", {}), occurrence.id: mark}
            return {"marks": marks, **look_again(today_in_paris(self.clock))}

        written = await change_document(
            self.store.patients,
            ins,
            update,
            self.events.audit(
                who,
                ins,
                "update",
                f"reminder={occurrence.id}",
                document_id=mark.get("document_id", ""),
            ),
        )
        if written is None:
            raise NotFound("no such reminder", field="id", slug="reminder-not-found")
        self.relay.kick(self.store.patients, ins)
        today = today_in_paris(self.clock)
        return _reminder(occurrence, marks_of(written).get(occurrence.id), today)

    async def MarkReminderDone(
        self, request: pb.MarkReminderDoneRequest, context: grpc.aio.ServicerContext
    ) -> pb.MarkReminderDoneResponse:
        who = caller()
        ins = validate_ins(request.ins)
        if len(request.document_id) > MAX_ID:
            raise InvalidArgument("document_id is not a document's id", field="document_id")
        occurrence = await self._occurrence(who, ins, request.id)
        if request.document_id:
            # The dossier says whether the caller may read this document of this patient (and
            # traces the read): a document of someone else's is not found.
            await self.ds.call(
                self.ds.dossier.GetDocument,
                dossier_pb2.GetDocumentRequest(ins=ins, document_id=request.document_id),
            )
        mark = {
            "done_on": today_in_paris(self.clock).isoformat(),
            "document_id": request.document_id,
        }
        return pb.MarkReminderDoneResponse(reminder=await self._mark(who, ins, occurrence, mark))

    async def PostponeReminder(
        self, request: pb.PostponeReminderRequest, context: grpc.aio.ServicerContext
    ) -> pb.PostponeReminderResponse:
        who = caller()
        ins = validate_ins(request.ins)
        today = today_in_paris(self.clock)
        until = domain.postpone_date(request.until, today, today + timedelta(days=366))
        occurrence = await self._occurrence(who, ins, request.id)
        mark = {"postponed_until": until.isoformat()}
        return pb.PostponeReminderResponse(reminder=await self._mark(who, ins, occurrence, mark))

    async def SetPreventionMessages(
        self, request: pb.SetPreventionMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPreventionMessagesResponse:
        who = caller()
        ins = validate_ins(request.ins)
        await self._patient_side(who, ins, write=True)
        await self.people.get(ins)
        wanted = bool(request.messages)
        written = await change_document(
            self.store.patients,
            ins,
            # the day computed may have passed while they were off: looked at again
            lambda current: {
                "prevention_messages": wanted,
                **look_again(today_in_paris(self.clock)),
            },
            self.events.audit(who, ins, "update", "prevention"),
        )
        if written is None:
            raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
        self.relay.kick(self.store.patients, ins)
        return pb.SetPreventionMessagesResponse(prevention_messages=wanted)


def _when(stamp: Any) -> datetime:
    moment: datetime = stamp.ToDatetime(tzinfo=UTC)
    return moment


def _period(
    request: pb.CreateAppointmentRequest, now: datetime, settings: AgendaSettings
) -> tuple[datetime, datetime]:
    if not request.HasField("starts_at"):
        raise InvalidArgument("starts_at is required", field="starts_at")
    if not request.HasField("ends_at"):
        raise InvalidArgument("ends_at is required", field="ends_at")
    starts_at = request.starts_at.ToDatetime(tzinfo=UTC)
    ends_at = request.ends_at.ToDatetime(tzinfo=UTC)
    domain.period(starts_at, ends_at, now, settings.appointments_years_ahead)
    return starts_at, ends_at


def _appointment(doc: Document) -> pb.Appointment:
    return pb.Appointment(
        id=doc["_id"],
        ins=doc["ins"],
        title=doc["title"],
        starts_at=timestamp(doc["starts_at"]),
        ends_at=timestamp(doc["ends_at"]),
        location=doc.get("location", ""),
        professional=doc.get("professional", ""),
        shared_with=doc.get("shared_with", []),
        status=doc["status"],
        proposed_by=doc["proposed_by"],
        notes=doc.get("notes", ""),
        created_at=timestamp(doc["created_at"]),
        updated_at=timestamp(doc["updated_at"]),
    )


def _reminder(occurrence: Occurrence, mark: Mark | None, today: date) -> pb.Reminder:
    rule = occurrence.rule
    return pb.Reminder(
        id=occurrence.id,
        rule_id=rule.id,
        act=rule.act,
        category=rule.category,
        due_from=occurrence.due_from.isoformat(),
        due_until=occurrence.due_until.isoformat(),
        status=domain.status_of(occurrence, mark, today).value,
        reason=rule.reason,
        source=rule.source,
        document_id=mark.document_id if mark else "",
        postponed_until=mark.postponed_until.isoformat() if mark and mark.postponed_until else "",
    )


def calendar_of(
    ins: str,
    appointments: list[Document],
    shown: list[Occurrence],
    marks: dict[str, Mark],
    today: date,
    now: datetime,
) -> bytes:
    """The agenda as RFC 5545: each appointment (but a declined proposal) a VEVENT; each
    reminder shown a VTODO, from the day it is due to the last day of its window, completed
    once done. UIDs are stable across exports and name neither the patient nor the INS."""
    cal = icalendar.Calendar()
    cal.add("prodid", "-//DMP//Agenda//FR")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", "Mon agenda santé")
    for doc in appointments:
        status = Status(doc["status"])
        if status is Status.DECLINED:
            continue
        event = icalendar.Event()
        event.add("uid", _uid(ins, doc["_id"]))
        event.add("dtstamp", now.astimezone(UTC))
        event.add("dtstart", doc["starts_at"].replace(tzinfo=UTC))
        event.add("dtend", doc["ends_at"].replace(tzinfo=UTC))
        event.add("summary", doc["title"])
        if doc.get("location"):
            event.add("location", doc["location"])
        if doc.get("notes"):
            event.add("description", doc["notes"])
        event.add("status", ICS_STATUS[status])
        event.add("last-modified", doc["updated_at"].replace(tzinfo=UTC))
        cal.add_component(event)
    for occurrence in shown:
        todo = icalendar.Todo()
        todo.add("uid", _uid(ins, occurrence.id))
        todo.add("dtstamp", now.astimezone(UTC))
        todo.add("summary", f"Rappel de prévention : {occurrence.rule.act}")
        todo.add("description", f"{occurrence.rule.reason}. Source : {occurrence.rule.source}")
        todo.add("categories", [occurrence.rule.category])
        todo.add("dtstart", occurrence.due_from)
        todo.add("due", occurrence.due_until + timedelta(days=1))
        done = domain.status_of(occurrence, marks.get(occurrence.id), today)
        todo.add("status", "COMPLETED" if done is domain.ReminderStatus.DONE else "NEEDS-ACTION")
        cal.add_component(todo)
    return bytes(cal.to_ical())


def _uid(ins: str, item: str) -> str:
    return f"{uuid.uuid5(UID_NAMESPACE, ins + ':' + item)}@dmp.localhost"
