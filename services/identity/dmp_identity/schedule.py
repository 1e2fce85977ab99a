"""Identity's scheduled rule, on the injected clock: a minor's legal representation ends at
their majority, with a notice beforehand.

Exactly once whatever the number of replicas: each step is decided on the account as it is
when written (dmp_kit.outbox.change_document: the write lands only on the version read) and
writes its mark with its events, so a replica that comes second finds the step done.
"""

from __future__ import annotations

import asyncio
from datetime import date

from dmp_identity import domain, events
from dmp_identity.store import MAJORITY_NOTICED, REPRESENTED, IdentityStore
from dmp_kit.clock import Clock
from dmp_kit.logging import get_logger
from dmp_kit.mongo import Document
from dmp_kit.outbox import OutboxRelay
from dmp_kit.periodic import every

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

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.interval, self.once, stop, event="schedule_retry")

    async def once(self) -> None:
        today = self.clock.now().astimezone(domain.PARIS).date()
        changed = [
            account["_id"]
            for account in await self.store.represented_patients()
            if await self.representation(account, today)
        ]
        if changed:
            self.relay.kick(self.store.accounts, *changed)

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
        """The step due for this minor, if any, written with its events; True if written."""
        step = self._step(account, today)
        if step is None:
            return False
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
                or self._step(current, today) != step
                or current.get("legal_representatives") != representatives
            ):
                return None
            done: Document = (
                {MAJORITY_NOTICED: True}
                if step == "notice"
                else {
                    REPRESENTED: False,
                    "legal_representatives": [],
                    "representation_ended_on": majority.isoformat(),
                }
            )
            written.append(current)
            return done

        news = events.representation_events(self.clock, step, ins, representatives, majority)
        await self.store.change_account(account["_id"], fields, *news)
        if written:
            log.info("representation_" + step, account_id=account["_id"])
        return bool(written)
