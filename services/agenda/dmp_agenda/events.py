"""Agenda's events: appointments that changed and reminders due (never a title, place, note or
name), and its audit records."""

from __future__ import annotations

from dmp.events.v1 import agenda_pb2, envelope_pb2
from dmp_agenda.domain import Occurrence
from dmp_kit.auth import Principal
from dmp_kit.clock import Clock
from dmp_kit.events import actor_of, audit_event, new_event

SOURCE = "agenda"


class AgendaEvents:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def appointment(
        self, who: Principal, ins: str, appointment_id: str, change: str, shared_with: list[str]
    ) -> envelope_pb2.Envelope:
        return new_event(
            f"agenda.appointment.{change}",
            agenda_pb2.AppointmentChanged(
                appointment_id=appointment_id, change=change, shared_with=shared_with
            ),
            source=SOURCE,
            clock=self.clock,
            actor=actor_of(who),
            patient_ins=ins,
        )

    def reminder_due(self, ins: str, occurrence: Occurrence, version: str) -> envelope_pb2.Envelope:
        return new_event(
            "agenda.reminder.due",
            agenda_pb2.PreventionReminderDue(
                reminder_id=occurrence.id,
                rule_id=occurrence.rule.id,
                act=occurrence.rule.act,
                category=occurrence.rule.category,
                rules_version=version,
            ),
            source=SOURCE,
            clock=self.clock,
            patient_ins=ins,
        )

    def audit(
        self,
        who: Principal,
        ins: str,
        action: str,
        query: str,
        *,
        outcome: str = "success",
        document_id: str = "",
    ) -> envelope_pb2.Envelope:
        """Who read or changed which part of the agenda: `query` names it (appointment=<id>,
        appointments, calendar, reminders, reminder=<id>, prevention), never what it says."""
        return audit_event(
            source=SOURCE,
            clock=self.clock,
            caller=who,
            patient_ins=ins,
            action=action,
            outcome=outcome,
            query=query,
            document_id=document_id,
        )
