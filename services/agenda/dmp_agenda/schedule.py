"""The agenda's background work: the dossier's events it follows, and the reminders' delivery
on the injected clock.

Each reminder due is announced once (agenda.reminder.due, which notify turns into a message
carrying the act's name alone): the occurrence's id is added to the patient's `notified` in the
same single-document update as the event, and that update lands only on the version read
(dmp_kit.outbox.change_document). A second replica, or the same one after a restart, finds it
there and announces nothing.

The schedule does not read every patient on each run: each patient's record holds the day it
is to be looked at again (`next_due`, see the store), and a run reads the patients of that day
and the day before (dmp_kit.periodic.DailyReads). A process's first run of each day reads every
patient whose day has come, once, after having those whose day was computed under other rules
(or by an older version, which kept none) looked at today.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, timedelta

from dmp.events.v1 import envelope_pb2
from dmp_agenda import domain
from dmp_agenda.api import PARIS, People, marks_of, person_of, today_in_paris
from dmp_agenda.domain import PreventionRules
from dmp_agenda.events import AgendaEvents
from dmp_agenda.store import AgendaStore, look_again
from dmp_kit.clock import Clock
from dmp_kit.logging import get_logger
from dmp_kit.mongo import Document
from dmp_kit.outbox import OutboxRelay, change_document
from dmp_kit.periodic import DailyReads, every

log = get_logger(__name__)
# dossier.<event> → the status the agenda keeps
DOSSIER_STATUSES = {
    "dossier_opened": "open",
    "dossier_reopened": "open",
    "dossier_closed": "closed",
    "deletion_requested": "closed",
}


class Schedule:
    def __init__(
        self,
        store: AgendaStore,
        rules: PreventionRules,
        relay: OutboxRelay,
        clock: Clock,
        *,
        interval: float,
    ) -> None:
        self.store = store
        self.rules = rules
        self.relay = relay
        self.clock = clock
        self.interval = interval
        self.events = AgendaEvents(clock)
        self.reads = DailyReads("next_due")

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.interval, self.once, stop, event="schedule_retry")

    async def once(self) -> None:
        today = today_in_paris(self.clock)
        if self.reads.days(today) is None:  # every patient whose day has come
            await self.store.look_again_under(self.rules.version, today)
        docs = await self.store.to_remind(self.reads, today)
        announced = [doc["_id"] for doc in docs if await self.announce(doc, today)]
        if announced:
            self.relay.kick(self.store.patients, *announced)
        self.reads.done(today)

    async def announce(self, doc: Document, today: date) -> bool:
        """The patient's reminders due and not yet announced, each with its event, and the day
        to look at them again; True if an announcement was written."""
        first = self._due(doc, today)
        expected = [o.id for o in first]
        written: list[bool] = []

        def fields(current: Document | None) -> Document | None:
            # Decided again on the document as it is now: another replica may have done it.
            written.clear()
            if current is None or [o.id for o in self._due(current, today)] != expected:
                return None
            written.append(True)
            notified = [*current.get("notified", []), *expected]
            return {
                "notified": notified,
                "next_due": self._next_due(current, set(notified), today),
                "next_due_rules": self.rules.version,
            }

        news = [self.events.reminder_due(doc["_id"], o, self.rules.version) for o in first]
        await change_document(self.store.patients, doc["_id"], fields, *news)
        if not written:
            # Changed since it was read (a vaccination note, another replica): looked at again
            # later today, on the record as it is then, rather than left on a day gone by.
            await change_document(
                self.store.patients,
                doc["_id"],
                lambda current: None if current is None else look_again(today),
            )
        if written and expected:
            log.info("reminders_due", count=len(expected))
        return bool(written and expected)

    def _next_due(self, doc: Document, notified: set[str], today: date) -> str | None:
        if not doc.get("birth_date"):
            return None  # looked at again once it is known
        day = domain.next_announcement(
            self.rules, person_of(doc), marks_of(doc), notified, today + timedelta(days=1)
        )
        return day.isoformat() if day else None

    def _due(self, doc: Document, today: date) -> list[domain.Occurrence]:
        if not doc.get("birth_date"):
            return []
        return domain.to_notify(
            self.rules,
            person_of(doc),
            today,
            marks_of(doc),
            set(doc.get("notified", [])),
            dossier_open=doc.get("dossier_status") == "open",
            messages_wanted=doc.get("prevention_messages") is not False,
        )


async def on_dossier_event(
    store: AgendaStore, people: People, clock: Clock, event: envelope_pb2.Envelope
) -> None:
    """The dossier's lifecycle: its status (nothing is announced for a closed one); at opening,
    the patient's birth date; at a purge, everything the agenda holds of the patient."""
    kind = event.WhichOneof("payload")
    ins = event.patient_ins
    if not ins:
        return
    at = event.occurred_at.ToDatetime(tzinfo=UTC)
    if kind == "dossier_purged":
        await store.purge(ins, at)
        return
    status = DOSSIER_STATUSES.get(kind or "")
    if status is None:
        return
    await store.set_dossier_status(ins, status, at, today_in_paris(clock))
    if kind == "dossier_opened":
        await people.learn(ins)


async def on_document_added(
    store: AgendaStore, rules: PreventionRules, relay: OutboxRelay, event: envelope_pb2.Envelope
) -> None:
    """A vaccination note (87273-9, section prévention) marks done the vaccination reminders
    due (or postponed) on the day it was added. One hidden from the patient marks nothing: its
    existence is not told to them that way."""
    if event.WhichOneof("payload") != "document_added":
        return
    added = event.document_added
    if added.type_code != domain.VACCINATION_TYPE_CODE or added.hidden_from_patient:
        return
    ins = event.patient_ins
    on = event.occurred_at.ToDatetime(tzinfo=UTC).astimezone(PARIS).date()

    def mark(current: Document | None) -> Document | None:
        if current is None or not current.get("birth_date"):
            return None
        done = domain.done_by_vaccination(rules, person_of(current), on, marks_of(current))
        if not done:
            return None
        marks = dict(current.get("marks", {}))
        for occurrence in done:
            marks[occurrence.id] = {"done_on": on.isoformat(), "document_id": added.document_id}
        return {"marks": marks}

    await change_document(store.patients, ins, mark)
    relay.kick(store.patients, ins)
