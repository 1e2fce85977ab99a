"""The reminders' schedule on its real database: each reminder announced once, with the day the
patient is to be looked at again, and a run that reads the patients of its days only (not every
patient of the platform on each run), but every one whose day has come when it starts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp_agenda import domain
from dmp_agenda.api import today_in_paris
from dmp_agenda.domain import Person, PreventionRules
from dmp_agenda.schedule import Schedule
from dmp_agenda.store import AgendaStore
from dmp_kit.bus import EventBus
from dmp_kit.clock import ManualClock
from dmp_kit.outbox import OUTBOX, OutboxRelay, change_document
from dmp_stack.testing import Infra, make_ins

RULES = PreventionRules.parse(
    (resources.files("dmp_agenda") / "data" / "prevention.toml").read_text("utf-8")
)
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)  # 10:00 in Paris
TODAY = date(2026, 3, 10)
DATABASE = "agenda_schedule_test"


@pytest.fixture
async def store(infra: Infra) -> AsyncIterator[AgendaStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongo.url, tz_aware=True)
    await client.drop_database(DATABASE)
    agenda = AgendaStore(client[DATABASE])
    await agenda.ensure_indexes()
    yield agenda
    await client.drop_database(DATABASE)
    await client.close()


def schedule(store: AgendaStore, clock: ManualClock, infra: Infra) -> Schedule:
    # The relay is only kicked here (nothing is published): the events are read in the outbox.
    relay = OutboxRelay(EventBus(infra.nats.url, "agenda-schedule-test"), [store.patients])
    return Schedule(store, RULES, relay, clock, interval=1.0)


async def open_dossier(store: AgendaStore, ins: str, birth: date, sex: str) -> None:
    await store.set_dossier_status(ins, "open", T0, TODAY)
    await store.know(ins, birth.isoformat(), sex, T0, TODAY)


async def announced(store: AgendaStore, ins: str) -> list[str]:
    """The reminders announced to the patient, as their record lists them."""
    doc = await store.patients.find_one({"_id": ins})
    assert doc is not None
    return [str(i) for i in doc.get("notified", [])]


async def events_of(store: AgendaStore, ins: str) -> int:
    doc = await store.patients.find_one({"_id": ins})
    assert doc is not None
    return len(doc.get(OUTBOX, []))


async def seventy_year_old(
    store: AgendaStore, next_due: str | None, rules_version: str | None
) -> str:
    """A man with reminders due today, his record written as told (no day at all: as by the
    version before the days)."""
    ins = make_ins()
    doc: dict[str, Any] = {
        "_id": ins,
        "birth_date": date(1956, 1, 5).isoformat(),
        "sex": "M",
        "dossier_status": "open",
        "marks": {},
        "notified": [],
    }
    if next_due is not None:
        doc |= {"next_due": next_due, "next_due_rules": rules_version}
    await store.patients.insert_one(doc)
    return ins


@pytest.mark.asyncio(loop_scope="session")
async def test_each_reminder_once_then_the_patient_is_looked_at_on_its_next_day(
    store: AgendaStore, infra: Infra
) -> None:
    clock = ManualClock(T0)
    run = schedule(store, clock, infra)
    newborn = make_ins()
    await open_dossier(store, newborn, TODAY, "F")
    await run.once()
    [eight_days] = domain.to_notify(RULES, Person(TODAY, "F"), TODAY, {}, set())
    assert await announced(store, newborn) == [eight_days.id]
    assert await events_of(store, newborn) == 1
    expected_next = domain.next_announcement(
        RULES, Person(TODAY, "F"), {}, {eight_days.id}, TODAY + timedelta(days=1)
    )
    assert expected_next is not None and expected_next > TODAY
    doc = await store.patient(newborn)
    assert doc is not None
    assert doc["next_due"] == expected_next.isoformat()
    assert doc["next_due_rules"] == RULES.version
    # Runs again the same day, and a second process beside it: nothing more.
    await run.once()
    await schedule(store, clock, infra).once()
    assert await events_of(store, newborn) == 1
    # On that day, the next reminder.
    clock.advance(timedelta(days=(expected_next - TODAY).days))
    await run.once()
    assert len(await announced(store, newborn)) == 2
    assert await events_of(store, newborn) == 2


@pytest.mark.asyncio(loop_scope="session")
async def test_a_run_reads_the_patients_of_its_days_and_a_start_every_one_whose_day_came(
    store: AgendaStore, infra: Infra
) -> None:
    clock = ManualClock(T0)
    run = schedule(store, clock, infra)
    await run.once()  # its first run
    # A 70-year-old man with reminders due today, whose record says to look again in 3 weeks
    # (as if written so): the runs of these 3 weeks do not read him.
    man = await seventy_year_old(store, (TODAY + timedelta(days=21)).isoformat(), RULES.version)
    for _ in range(20):
        clock.advance(timedelta(days=1))
        await run.once()
    assert await announced(store, man) == []
    # On his day he is.
    clock.advance(timedelta(days=1))
    await run.once()
    told = await announced(store, man)
    assert {i.split("~")[0] for i in told} >= {"grippe", "zona", "depistage-colorectal"}

    # A record written under other rules (or by a version that kept no day) is looked at when a
    # process starts, whatever day it holds; one under these rules is not.
    other = await seventy_year_old(store, "2030-01-01", "2020-01")
    same = await seventy_year_old(store, "2030-01-01", RULES.version)
    older = await seventy_year_old(store, None, None)
    await run.once()
    assert await announced(store, other) == [] and await announced(store, older) == []
    await schedule(store, clock, infra).once()  # a process that starts
    assert await announced(store, other) and await announced(store, older)
    assert await announced(store, same) == []


@pytest.mark.asyncio(loop_scope="session")
async def test_a_closed_dossier_waits_and_is_looked_at_again_when_it_is_reopened(
    store: AgendaStore, infra: Infra
) -> None:
    clock = ManualClock(T0)
    run = schedule(store, clock, infra)
    woman = make_ins()
    await store.know(woman, date(1976, 1, 5).isoformat(), "F", T0, TODAY)
    await store.set_dossier_status(woman, "closed", T0, TODAY)
    await run.once()
    for _ in range(3):
        clock.advance(timedelta(days=1))
        await run.once()
    assert await announced(store, woman) == []
    # Reopened three days later: looked at that day, although the day she was written for
    # has passed.
    reopened = today_in_paris(clock)
    await store.set_dossier_status(woman, "open", clock.now(), reopened)
    await run.once()
    due = domain.to_notify(RULES, Person(date(1976, 1, 5), "F"), reopened, {}, set())
    assert {o.rule.id for o in due} >= {"depistage-sein", "depistage-colorectal"}
    assert await announced(store, woman) == [o.id for o in due]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_record_changed_while_decided_is_looked_at_again_the_same_day(
    store: AgendaStore, infra: Infra
) -> None:
    clock = ManualClock(T0)
    run = schedule(store, clock, infra)
    await run.once()
    # His day was three days ago (the agenda was away): a first run of the day reads him.
    man = await seventy_year_old(store, (TODAY - timedelta(days=3)).isoformat(), RULES.version)
    read = await store.patient(man)
    assert read is not None
    # Meanwhile a vaccination note marks the flu vaccine done (as on_document_added writes it).
    [flu] = [
        o
        for o in domain.to_notify(RULES, Person(date(1956, 1, 5), "M"), TODAY, {}, set())
        if o.rule.id == "grippe"
    ]
    marks = {flu.id: {"done_on": TODAY.isoformat(), "document_id": "note"}}
    await change_document(store.patients, man, lambda current: {"marks": marks})
    # The decision made on the record as read does not land; the record is not left behind.
    assert await run.announce(read, TODAY) is False
    doc = await store.patient(man)
    assert doc is not None and doc["notified"] == [] and doc["next_due"] == TODAY.isoformat()
    await run.once()  # a later run that day: the others, not the flu vaccine
    told = {i.split("~")[0] for i in await announced(store, man)}
    assert "grippe" not in told and {"zona", "depistage-colorectal"} <= told
