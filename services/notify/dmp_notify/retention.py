"""How long notify remembers what it sent.

A delivery record (`deliveries`: a key, the channel, when, the dossier) is what makes a send
happen once: an event delivered again, a call retried, finds its record and sends nothing.
An event is redelivered for minutes at most (DMP_MAX_DELIVERY_ATTEMPTS with backoff), an
identity call retried for seconds, so a record older than the retention period protects
nothing any more and only says that someone was notified when. Every
DMP_RETENTION_INTERVAL_SECONDS, records older than DMP_DELIVERY_RETENTION_DAYS (on the
injected clock) are deleted. Running on several replicas at once is harmless: each deletes
what is older than the same limit.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from dmp_kit.clock import Clock
from dmp_kit.logging import get_logger
from dmp_kit.periodic import every
from dmp_notify.store import NotifyStore

log = get_logger(__name__)


class DeliveryRetention:
    def __init__(self, store: NotifyStore, clock: Clock, *, days: float, interval: float):
        self.store = store
        self.clock = clock
        self.keep = timedelta(days=days)
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.interval, self.once, stop, event="delivery_retention_retry")

    async def once(self) -> int:
        """Deletes the delivery records past the retention period; how many."""
        forgotten = await self.store.forget_deliveries(self.clock.now() - self.keep)
        if forgotten:
            log.info("deliveries_forgotten", count=forgotten)
        return forgotten
