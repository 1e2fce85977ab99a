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
from typing import Any

from pymongo.errors import PyMongoError

from dmp_kit.errors import Conflict, Unavailable
from dmp_kit.logging import get_logger

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
) -> None:
    """`job()` now, then every `interval` seconds until `stop` is set. A failure of a kind in
    `retry_on` is logged as `event` (warning, with the error's type only: no message, which
    could carry data) and the job runs again at the next tick."""
    if interval <= 0:
        raise ValueError("a periodic job needs an interval of more than 0 seconds")
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
