"""Identity's scheduled rule, on the injected clock: a minor's legal representation ends at
their majority, with a notice beforehand.

Exactly once whatever the number of replicas: each step is decided on the account as it is
when written (dmp_kit.outbox.change_document: the write lands only on the version read) and
writes its mark with its events, so a replica that comes second finds the step done.

A run does not read every minor: each one's account holds the day to look at them again (their
next step's, REPRESENTATION_ON), and a run reads the minors of that day and the day before
(dmp_kit.periodic.DailyReads). A process's first run of each day reads every minor whose day
has come, once, after having those whose notice day was computed with another notice period,
and those registered by an older version, looked at today.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from dmp_identity import domain, events
from dmp_identity.store import (
    MAJORITY_NOTICED,
    REPRESENTATION_NOTICE_DAYS,
    REPRESENTATION_ON,
    REPRESENTED,
    IdentityStore,
)
from dmp_kit.clock import Clock
from dmp_kit.logging import get_logger
from dmp_kit.mongo import Document
from dmp_kit.outbox import OutboxRelay
from dmp_kit.periodic import DailyReads, every

log = get_logger(__name__)


class Schedule:
    def __init__(
        self,
        store: IdentityStore,
        relay: OutboxRelay,
        clock: Clock,
        *,
        notice_days: int,
        interval: float,
    ) -> None:
        self.store = store
        self.relay = relay
        self.clock = clock
        self.notice_days = notice_days
        self.interval = interval
        self.reads = DailyReads(REPRESENTATION_ON)

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.interval, self.once, stop, event="schedule_retry")

    async def once(self) -> None:
        today = self.clock.now().astimezone(domain.PARIS).date()
        if self.reads.days(today) is None:  # every minor whose day has come
            await self.store.look_again_under(self.notice_days, today)
        accounts = await self.store.represented(self.reads, today)
        changed = [
            account["_id"] for account in accounts if await self.representation(account, today)
        ]
        if changed:
            self.relay.kick(self.store.accounts, *changed)
        self.reads.done(today)

    def _step(self, account: Document, today: date) -> domain.RepresentationStep | None:
        if not account.get(REPRESENTED):
            return None
        return domain.representation_step(
            date.fromisoformat(account["birth_date"]),
            today,
            noticed=bool(account.get(MAJORITY_NOTICED)),
            notice_days=self.notice_days,
        )

    async def representation(self, account: Document, today: date) -> bool:
        """The step due for this minor, if any, written with its events, and the day to look at
        them again; True if a step was written."""
        step = self._step(account, today)
        ins = account["ins"]
        birth = date.fromisoformat(account["birth_date"])
        majority = domain.majority_date(birth)
        representatives = list(account.get("legal_representatives", []))
        written: list[Document] = []

        def fields(current: Document | None) -> Document | None:
            # Decided again on the account as it is now: another replica may have done it.
            written.clear()
            if (
                current is None
                or not current.get(REPRESENTED)
                or self._step(current, today) != step
                or current.get("legal_representatives") != representatives
            ):
                return None
            written.append(current)
            if step == "end":
                return {
                    REPRESENTED: False,
                    "legal_representatives": [],
                    "representation_ended_on": majority.isoformat(),
                    REPRESENTATION_ON: None,
                }
            noticed = step == "notice" or bool(current.get(MAJORITY_NOTICED))
            next_day = domain.next_representation_day(
                birth, today + timedelta(days=1), noticed=noticed, notice_days=self.notice_days
            )
            return {
                **({MAJORITY_NOTICED: True} if step == "notice" else {}),
                REPRESENTATION_ON: next_day.isoformat(),
                REPRESENTATION_NOTICE_DAYS: self.notice_days,
            }

        news = (
            events.representation_events(self.clock, step, ins, representatives, majority)
            if step is not None
            else []
        )
        await self.store.change_account(account["_id"], fields, *news)
        if written and step is not None:
            log.info("representation_" + step, account_id=account["_id"])
        return bool(written and step is not None)
