"""All of the agenda's database access.

- `appointments`: one document per appointment, its events (agenda.appointment.*, audit.agenda)
  written with it by the kit's outbox.
- `patients`: one document per patient the agenda knows (INS as id): birth date and sex (for
  the reminders), the dossier's status as its events tell it, whether prevention messages are
  wanted, what the patient said of each reminder (`marks`) and which were announced
  (`notified`). An announcement is written with its event in one single-document update that
  lands only on the version read (dmp_kit.outbox.change_document): once, whatever the replicas.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from dmp_kit.mongo import Document, Store

HIDDEN = {"outbox": 0, "outbox_pending": 0}


class AgendaStore(Store):
    @property
    def appointments(self) -> Any:
        return self.db["appointments"]

    @property
    def patients(self) -> Any:
        return self.db["patients"]

    async def ensure_indexes(self) -> None:
        await self.appointments.create_index([("ins", 1), ("starts_at", 1)])
        await self.patients.create_index("dossier_status")

    # appointments ----------------------------------------------------------------------

    async def appointment(self, ins: str, appointment_id: str) -> Document | None:
        found: Document | None = await self.appointments.find_one(
            {"_id": appointment_id, "ins": ins}, HIDDEN
        )
        return found

    async def appointments_of(
        self, ins: str, start: datetime | None, end: datetime | None, limit: int
    ) -> list[Document]:
        """The patient's appointments that end after `start` and begin before `end`."""
        query: Document = {"ins": ins}
        if start is not None:
            query["ends_at"] = {"$gt": start}
        if end is not None:
            query["starts_at"] = {"$lt": end}
        cursor = self.appointments.find(query, HIDDEN).sort([("starts_at", 1), ("_id", 1)])
        return [doc async for doc in cursor.limit(limit)]

    # patients --------------------------------------------------------------------------

    async def patient(self, ins: str) -> Document | None:
        found: Document | None = await self.patients.find_one({"_id": ins}, HIDDEN)
        return found

    async def know(self, ins: str, birth_date: str, sex: str, now: datetime) -> None:
        """The patient's birth date and sex, kept once known (the rest stays as it is)."""
        try:
            await self.patients.update_one(
                {"_id": ins},
                {
                    "$set": {"birth_date": birth_date, "sex": sex},
                    "$setOnInsert": {"known_at": now, "marks": {}, "notified": []},
                },
                upsert=True,
            )
        except DuplicateKeyError:  # two first writes at once: the other one created it
            await self.patients.update_one(
                {"_id": ins}, {"$set": {"birth_date": birth_date, "sex": sex}}
            )

    async def set_dossier_status(self, ins: str, status: str, now: datetime) -> None:
        try:
            await self.patients.update_one(
                {"_id": ins},
                {
                    "$set": {"dossier_status": status},
                    "$setOnInsert": {"known_at": now, "marks": {}, "notified": []},
                },
                upsert=True,
            )
        except DuplicateKeyError:
            await self.patients.update_one({"_id": ins}, {"$set": {"dossier_status": status}})

    async def to_remind(self) -> list[Document]:
        """The patients whose reminders may be announced: an open dossier, a known birth date,
        prevention messages wanted."""
        cursor = self.patients.find(
            {
                "dossier_status": "open",
                "birth_date": {"$exists": True},
                "prevention_messages": {"$ne": False},
            },
            HIDDEN,
        )
        return [doc async for doc in cursor]

    # purge -----------------------------------------------------------------------------

    async def purge(self, ins: str, purged_at: datetime) -> None:
        """Everything the agenda holds of the patient, written up to the purge (a DMP opened
        again since keeps what it has)."""
        await self.appointments.delete_many({"ins": ins, "created_at": {"$lte": purged_at}})
        await self.patients.delete_one({"_id": ins, "known_at": {"$lte": purged_at}})
