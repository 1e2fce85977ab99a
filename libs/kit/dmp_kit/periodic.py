"""Jobs that run every so often for as long as the service runs (schedules, purges, retention).

Each service's periodic work has the same life: run once at start (what a stopped process left
undone is due now), then every `interval` seconds; end at once when the service stops, even
in the middle of a wait; when the database or a peer is away, say so and try again at the
next tick rather than stopping the job. Anything else is a defect: it propagates, and the
runtime's supervisor (`ServiceRuntime._supervised`) logs it and starts the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import date, timedelta
from typing import Any

from pymongo.errors import PyMongoError

from dmp_kit.errors import Conflict, Unavailable
from dmp_kit.logging import get_logger
from dmp_kit.mongo import Document

log = get_logger(__name__)
# What passes: the database away, a peer away, a record changed by others past the retries.
TRANSIENT: tuple[type[BaseException], ...] = (PyMongoError, Unavailable, Conflict)


async def every(
    interval: float,
    job: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    event: str,
    retry_on: tuple[type[BaseException], ...] = TRANSIENT,
    at_start: bool = True,
) -> None:
    """`job()` now (`at_start`; else after the first interval), then every `interval` seconds
    until `stop` is set. A failure of a kind in `retry_on` is logged as `event` (warning, with
    the error's type only: no message, which could carry data) and the job runs again at the
    next tick."""
    if interval <= 0:
        raise ValueError("a periodic job needs an interval of more than 0 seconds")
    if not at_start:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    while not stop.is_set():
        try:
            await job()
        except retry_on as exc:
            log.warning(event, error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


@contextlib.asynccontextmanager
async def beside(work: Coroutine[Any, Any, object]) -> AsyncIterator[None]:
    """`work` runs as a task for as long as the block does, and is cancelled when it ends."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the block's own task is being cancelled: let it be


class DailyReads:
    """Which records a daily schedule reads on a run, when each record holds the day it is to be
    looked at again (an ISO date in one indexed field, which the schedule rewrites each time).

    A process's first run of each day (its first run, a new day, its clock moved) reads every
    record whose day has come: a range, once a day, which also finds a record whose day passed
    unread (written by an older version, or by a replica whose clock was behind). Its other
    runs that day read the records of that day and the day before: an equality each, which every
    server answers from the field's index (FerretDB pushes down equalities only).
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self.since: date | None = None  # the day of the previous complete run

    def days(self, today: date) -> list[date] | None:
        """The days to read by equality, or None: every record whose day has come."""
        if self.since != today:
            return None
        return [today - timedelta(days=1), today]

    async def find(
        self, collection: Any, query: Document, today: date, projection: Any = None
    ) -> list[Document]:
        """The records of `query` to look at today (see `days`)."""
        days = self.days(today)
        if days is None:
            cursor = collection.find({**query, self.field: {"$lte": today.isoformat()}}, projection)
            return [doc async for doc in cursor]
        found: list[Document] = []
        for day in days:
            cursor = collection.find({**query, self.field: day.isoformat()}, projection)
            found += [doc async for doc in cursor]
        return found

    def done(self, today: date) -> None:
        """Every record read for `today` was looked at."""
        self.since = today
