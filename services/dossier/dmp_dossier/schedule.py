"""The dossier's scheduled rules, on the injected clock: the 2-week reminder, the automatic
reveal after a month, and purges (10 years after closing; deletion requests)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from dmp.events.v1 import dossier_pb2 as ev
from dmp_dossier import domain
from dmp_dossier.events import DossierEvents
from dmp_dossier.store import DossierStore
from dmp_kit.auth import Principal
from dmp_kit.bus import EventBus
from dmp_kit.clock import Clock
from dmp_kit.events import derived_event_id
from dmp_kit.logging import get_logger
from dmp_kit.mongo import Document
from dmp_kit.outbox import OutboxRelay
from dmp_kit.periodic import every

log = get_logger(__name__)
SCHEDULER = Principal(kind="service", subject="dossier-scheduler", roles=frozenset({"scheduler"}))


class Schedule:
    def __init__(
        self, store: DossierStore, bus: EventBus, relay: OutboxRelay, clock: Clock, interval: float
    ) -> None:
        self.store = store
        self.bus = bus
        self.relay = relay
        self.clock = clock
        self.interval = interval
        self.events = DossierEvents(clock)

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.interval, self.once, stop, event="schedule_retry")

    async def once(self) -> None:
        now = self.clock.now()
        await self.remind(now)
        await self.reveal(now)
        await self.purge(now)
        self.relay.kick()

    async def remind(self, now: datetime) -> None:
        """Rule 8's 2-week reminder, once per hiding label: the patient for a document hidden
        from them, the legal representatives for one hidden from them."""

        def fields(current: Document | None) -> Document | None:
            if current is None or current.get("reminded", False):
                return None
            return {"reminded": True}

        for doc in await self.store.hidden_documents(
            created_before=now - domain.REMINDER_AFTER, reminded=False
        ):
            due = domain.reminders_due(doc["created_at"], doc.get("labels", []), now)
            events = [
                self.events.fact(
                    "document.reminder_due",
                    ev.ReminderDue(document_id=doc["_id"], label=label),
                    SCHEDULER,
                    doc["ins"],
                )
                for label in due
            ]
            await self.store.change_document_record(doc, fields, *events)

    async def reveal(self, now: datetime) -> None:
        def fields(current: Document | None) -> Document | None:
            if current is None:
                return None
            labels = domain.revealed(current["created_at"], current.get("labels", []), now)
            return None if labels is None else {"labels": labels}

        for doc in await self.store.hidden_documents(
            created_before=now - domain.AUTO_REVEAL_AFTER, reminded=None
        ):
            labels = domain.revealed(doc["created_at"], doc.get("labels", []), now)
            if labels is None:
                continue
            await self.store.change_document_record(
                doc,
                fields,
                self.events.fact(
                    "document.visibility_changed",
                    ev.DocumentVisibilityChanged(document_id=doc["_id"], confidentiality=labels),
                    SCHEDULER,
                    doc["ins"],
                ),
                self.events.audit(
                    SCHEDULER, doc["ins"], "update", document_id=doc["_id"], query="auto_reveal"
                ),
            )

    async def purge(self, now: datetime) -> None:
        for dossier in await self.store.due_for_purge(now):
            ins = dossier["_id"]
            cause = (
                "deletion_request"
                if dossier["status"] == "deletion_requested"
                else "closed_10_years"
            )
            # Told first (and again if the purge is cut short: consumers are idempotent),
            # then destroyed: the key before the data, so nothing readable is left behind.
            # The event's id is this purge's, whichever replica decides it: two replicas
            # racing publish one event (JetStream drops the second by its id).
            purge_id = derived_event_id(dossier["purge_after"], f"dossier.purged:{ins}:{cause}")
            await self.bus.publish_event(
                self.events.fact(
                    "dossier.purged",
                    ev.DossierPurged(cause=cause),
                    SCHEDULER,
                    ins,
                    event_id=purge_id,
                )
            )
            await self.store.purge(ins)
            log.info("dossier_purged", ins=ins, cause=cause)
