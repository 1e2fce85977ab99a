"""A minor's majority: the pure date rule, and the schedule on identity's real database, done
once even when two replicas run it at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp.events.v1 import envelope_pb2
from dmp_identity import domain
from dmp_identity.schedule import Schedule
from dmp_identity.store import REPRESENTATION_NOTICE_DAYS, REPRESENTATION_ON, IdentityStore
from dmp_kit.bus import EventBus
from dmp_kit.clock import ManualClock
from dmp_kit.outbox import OutboxRelay
from dmp_kit.periodic import DailyReads
from dmp_stack.testing import Infra, make_ins


@pytest.mark.parametrize(
    ("born", "of_age"),
    [
        (date(2008, 5, 17), date(2026, 5, 17)),
        (date(2008, 12, 31), date(2026, 12, 31)),
        (date(2009, 1, 1), date(2027, 1, 1)),
        (date(2010, 2, 28), date(2028, 2, 28)),
        (date(2010, 3, 1), date(2028, 3, 1)),
        # 18 years after a leap year is never one: born on 29 February, of age on 1 March.
        (date(2008, 2, 29), date(2026, 3, 1)),
        (date(2000, 2, 29), date(2018, 3, 1)),
        (date(1980, 2, 29), date(1998, 3, 1)),
    ],
)
def test_majority_is_the_18th_birthday_or_1_march_for_29_february(born: date, of_age: date) -> None:
    assert domain.majority_date(born) == of_age


def test_the_steps_the_notice_from_n_days_before_then_the_end_from_the_day() -> None:
    born = date(2008, 2, 29)  # of age on 1 March 2026
    step = domain.representation_step

    def on(day: date, noticed: bool = False) -> domain.RepresentationStep | None:
        return step(born, day, noticed=noticed, notice_days=30)

    assert on(date(2026, 1, 29)) is None  # 31 days before
    assert on(date(2026, 1, 30)) == "notice"  # 30 days before
    assert on(date(2026, 2, 28)) == "notice"  # the eve: still a minor
    assert on(date(2026, 2, 28), noticed=True) is None  # once
    assert on(date(2026, 3, 1)) == "end"  # the day counts
    assert on(date(2026, 3, 1), noticed=True) == "end"
    assert on(date(2031, 7, 14)) == "end"  # found late (the clock moved a long way): the end
    assert step(born, date(2026, 2, 28), noticed=False, notice_days=0) is None


# --- on the real database ----------------------------------------------------------------


@pytest.fixture
async def stores(infra: Infra) -> AsyncIterator[list[IdentityStore]]:
    """Two replicas' stores: two clients on the one database."""
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(infra.mongo.url, tz_aware=True) for _ in range(2)
    ]
    stores = [IdentityStore(c["identity_majority_test"]) for c in clients]
    await stores[0].ensure_indexes()
    yield stores
    for c in clients:
        await c.close()


async def minor(
    store: IdentityStore,
    born: date,
    representatives: list[str],
    on: str = "2026-02-10",
    notice_days: int | None = None,
) -> str:
    """A minor's account as registration writes it (`on`: the day of registration, when the
    schedule is to look at them), or as the schedule rewrote it (`notice_days`: the notice
    period it computed `on` with)."""
    ins = make_ins()
    await store.accounts.insert_one(
        {
            "_id": f"account-{ins}",
            "kind": "patient",
            "login": ins,
            "ins": ins,
            "birth_date": born.isoformat(),
            "legal_representatives": representatives,
            "represented": True,
            REPRESENTATION_ON: on,
            **({REPRESENTATION_NOTICE_DAYS: notice_days} if notice_days is not None else {}),
        }
    )
    return ins


def schedule_of(store: IdentityStore, clock: ManualClock, notice_days: int = 30) -> Schedule:
    # The relay is not run: the events stay in the accounts' outbox, read below.
    relay = OutboxRelay(EventBus("nats://127.0.0.1:1", "unused"), [store.accounts])
    return Schedule(store, relay, clock, notice_days=notice_days, interval=1)


def outbox(doc: dict[str, Any]) -> list[envelope_pb2.Envelope]:
    return [envelope_pb2.Envelope.FromString(bytes(e["data"])) for e in doc.get("outbox", [])]


@pytest.mark.asyncio(loop_scope="session")
async def test_two_replicas_notice_and_end_once(stores: list[IdentityStore]) -> None:
    today = date(2026, 2, 10)
    clock = ManualClock(datetime(2026, 2, 10, 11, tzinfo=UTC))
    schedules = [schedule_of(store, clock) for store in stores]
    parents = [make_ins(), make_ins()]
    soon = await minor(stores[0], date(2008, 2, 29), parents)  # of age on 1 March 2026
    far = await minor(stores[0], date(2015, 3, 2), parents[:1])

    async def both() -> None:
        """Both replicas decide on the same reading of the accounts, then write."""
        day = clock.now().astimezone(domain.PARIS).date()
        read = await stores[0].represented(DailyReads(REPRESENTATION_ON), day)
        await asyncio.gather(
            *(s.representation(account, day) for s in schedules for account in read)
        )
        await asyncio.gather(*(s.once() for s in schedules))

    await both()
    await both()
    doc = await stores[0].accounts.find_one({"ins": soon})
    assert doc is not None
    [notice] = outbox(doc)
    assert notice.type == "identity.representation.ending"
    assert list(notice.representation_ending.legal_representatives) == parents
    assert notice.representation_ending.majority_date == "2026-03-01"
    assert doc["legal_representatives"] == parents, "still represented before the day"

    clock.advance(timedelta(days=(date(2026, 3, 1) - today).days))
    await both()
    clock.advance(timedelta(days=3))
    await both()
    doc = await stores[0].accounts.find_one({"ins": soon})
    assert doc is not None
    assert [e.type for e in outbox(doc)] == [
        "identity.representation.ending",
        "identity.representation.ended",
        "audit.identity",
    ]
    assert doc["legal_representatives"] == [] and doc["represented"] is False
    untouched = await stores[0].accounts.find_one({"ins": far})
    assert untouched is not None
    assert untouched["legal_representatives"] == parents[:1] and not outbox(untouched)
    # looked at again 30 days before his majority (2 March 2033), not before
    assert untouched[REPRESENTATION_ON] == "2033-01-31"


@pytest.mark.asyncio(loop_scope="session")
async def test_minors_registered_before_the_schedule_are_found(stores: list[IdentityStore]) -> None:
    """Accounts written before the mark existed: the start marks those with representatives."""
    old, adult = make_ins(), make_ins()
    for ins, representatives in ((old, [make_ins()]), (adult, [])):
        await stores[0].accounts.insert_one(
            {
                "_id": f"account-{ins}",
                "kind": "patient",
                "login": ins,
                "ins": ins,
                "birth_date": "2015-03-02",
                "legal_representatives": representatives,
            }
        )
    await stores[0].ensure_indexes()
    # the schedule's first run of the day gives the minor a day, today, and reads them
    day = date(2026, 2, 10)
    assert await stores[0].look_again_under(30, day) >= 1
    found = {doc["ins"] for doc in await stores[0].represented(DailyReads(REPRESENTATION_ON), day)}
    assert old in found and adult not in found


@pytest.mark.asyncio(loop_scope="session")
async def test_a_run_reads_the_minors_of_its_days_and_a_start_every_one_whose_day_came(
    stores: list[IdentityStore],
) -> None:
    store = stores[0]
    clock = ManualClock(datetime(2026, 2, 10, 11, tzinfo=UTC))
    run = schedule_of(store, clock)
    await run.once()  # its first run
    # Of age on 1 March 2026, his notice due from 30 January, but his account says to look
    # at him on 20 February (as if the schedule had written so): the runs before that day,
    # each day's first included, do not read him.
    late = await minor(store, date(2008, 2, 29), [make_ins()], on="2026-02-20", notice_days=30)
    for _ in range(9):
        clock.advance(timedelta(days=1))
        await run.once()
    doc = await store.accounts.find_one({"ins": late})
    assert doc is not None and not outbox(doc)
    clock.advance(timedelta(days=1))
    await run.once()
    doc = await store.accounts.find_one({"ins": late})
    assert doc is not None
    assert [e.type for e in outbox(doc)] == ["identity.representation.ending"]
    assert doc[REPRESENTATION_ON] == "2026-03-01"  # next: the end

    # A process that starts with a longer notice period looks again at the minors whose notice
    # day came from the shorter one: one of age on 1 April 2026 is noticed from 1 February now.
    april = await minor(store, date(2008, 4, 1), [make_ins()], on="2026-02-20")
    await run.once()
    doc = await store.accounts.find_one({"ins": april})
    assert doc is not None and not outbox(doc) and doc[REPRESENTATION_ON] == "2026-03-02"
    await schedule_of(store, clock, notice_days=60).once()
    doc = await store.accounts.find_one({"ins": april})
    assert doc is not None
    assert [e.type for e in outbox(doc)] == ["identity.representation.ending"]
