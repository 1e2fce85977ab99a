"""All of the agenda's database access.

- `appointments`: one document per appointment, its events (agenda.appointment.*, audit.agenda)
  written with it by the kit's outbox.
- `patients`: one document per patient the agenda knows (INS as id): birth date and sex (for
  the reminders), the dossier's status as its events tell it, whether prevention messages are
  wanted, what the patient said of each reminder (`marks`) and which were announced
  (`notified`). An announcement is written with its event in one single-document update that
  lands only on the version read (dmp_kit.outbox.change_document): once, whatever the replicas.
  `next_due` is the Paris day (YYYY-MM-DD) the schedule looks at the patient again: the first
  on which something will be due, as the schedule computed it last (under the rules of
  `next_due_rules`), or the day of a change that may bring an announcement earlier (`look_again`);
  None when nothing more will be. The schedule reads the patients of a day by equality, which
  FerretDB serves from an index, instead of every patient on each run.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import cached_property
from typing import Any

from pymongo.errors import DuplicateKeyError

from dmp_kit.mongo import Document, Store
from dmp_kit.outbox import VERSION
from dmp_kit.periodic import DailyReads

HIDDEN = {"outbox": 0, "outbox_pending": 0}


def look_again(today: date) -> Document:
    """The fields that have the schedule look at the patient again today: written with any
    change that may bring an announcement earlier than the day it computed."""
    return {"next_due": today.isoformat()}


class AgendaStore(Store):
    @cached_property
    def appointments(self) -> Any:
        return self.db["appointments"]

    @cached_property
    def patients(self) -> Any:
        return self.db["patients"]

    async def ensure_indexes(self) -> None:
        await self.appointments.create_index([("ins", 1), ("starts_at", 1)])
        await self.patients.create_index("dossier_status")
        await self.patients.create_index("next_due")

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

    async def know(self, ins: str, birth_date: str, sex: str, now: datetime, today: date) -> None:
        """The patient's birth date and sex, kept once known (the rest stays as it is)."""
        await self._set(ins, {"birth_date": birth_date, "sex": sex}, now, today)

    async def set_dossier_status(self, ins: str, status: str, now: datetime, today: date) -> None:
        await self._set(ins, {"dossier_status": status}, now, today)

    async def _set(self, ins: str, fields: Document, now: datetime, today: date) -> None:
        """Fields of the patient's record, created if need be; the schedule looks at them again
        today, and a decision it was making on the version before does not land. The process's
        lock on the record is held meanwhile: on FerretDB an update rewrites the whole document
        and would undo a concurrent change of this process (DocumentLocks)."""
        change = {"$set": {**fields, **look_again(today)}, "$inc": {VERSION: 1}}
        async with self.locks.hold(self.patients.name, ins):
            try:
                await self.patients.update_one(
                    {"_id": ins},
                    {**change, "$setOnInsert": {"known_at": now, "marks": {}, "notified": []}},
                    upsert=True,
                )
            except DuplicateKeyError:  # two first writes at once: the other one created it
                await self.patients.update_one({"_id": ins}, change)

    async def to_remind(self, reads: DailyReads, today: date) -> list[Document]:
        """The patients to look at today (open dossier, prevention messages wanted), read by
        their `next_due` (see DailyReads)."""
        query = {"dossier_status": "open", "prevention_messages": {"$ne": False}}
        return await reads.find(self.patients, query, today, HIDDEN)

    async def look_again_under(self, rules_version: str, today: date) -> int:
        """Patients whose next day was computed under other rules (or never computed: written
        by an older version) are looked at again today; how many. Run once a day."""
        result = await self.patients.update_many(
            {
                "next_due_rules": {"$ne": rules_version},
                "$or": [{"next_due": {"$gt": today.isoformat()}}, {"next_due": None}],
            },
            {"$set": look_again(today), "$inc": {VERSION: 1}},
        )
        return int(result.modified_count)

    # purge -----------------------------------------------------------------------------

    async def purge(self, ins: str, purged_at: datetime) -> None:
        """Everything the agenda holds of the patient, written up to the purge (a DMP opened
        again since keeps what it has)."""
        await self.appointments.delete_many({"ins": ins, "created_at": {"$lte": purged_at}})
        await self.patients.delete_one({"_id": ins, "known_at": {"$lte": purged_at}})
