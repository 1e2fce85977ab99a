"""The one loop every service's periodic jobs run in, and which records a daily schedule reads
(dmp_kit.periodic)."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import date, timedelta

import pytest
from pymongo.errors import PyMongoError

from dmp_kit.errors import Conflict, Unavailable
from dmp_kit.periodic import DailyReads, every


async def test_a_job_runs_at_once_then_every_interval_until_stopped() -> None:
    stop = asyncio.Event()
    runs: list[float] = []

    async def job() -> None:
        runs.append(time.monotonic())
        if len(runs) == 3:
            stop.set()

    started = time.monotonic()
    await asyncio.wait_for(every(0.05, job, stop, retry_on=(), event="t"), timeout=5)
    assert len(runs) == 3
    assert runs[0] - started < 0.05  # the first run does not wait for the interval
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(runs))


async def test_a_stop_ends_a_long_wait_at_once() -> None:
    stop = asyncio.Event()
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1

    task = asyncio.create_task(every(3600, job, stop, retry_on=(), event="t"))
    await asyncio.sleep(0.05)
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(task, timeout=2)
    assert time.monotonic() - started < 1 and runs == 1


async def test_the_database_or_a_peer_away_is_logged_and_tried_again_at_the_next_tick(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stop = asyncio.Event()
    failures: list[Exception] = [
        PyMongoError("connection refused by 10.0.0.7, patient 180057512345623"),
        Unavailable("identity did not answer"),
        Conflict("the record is being changed by others"),
    ]
    attempts = 0

    async def job() -> None:
        nonlocal attempts
        attempts += 1
        if failures:
            raise failures.pop(0)
        stop.set()

    await asyncio.wait_for(every(0.01, job, stop, event="purge_retry"), timeout=5)
    assert attempts == 4  # the three passing failures (the default), then the run that stops
    out = capsys.readouterr().out
    assert out.count("purge_retry") == 3 and "PyMongoError" in out and "Unavailable" in out
    assert "180057512345623" not in out  # the error's type is logged, never its message


async def test_a_defect_is_not_swallowed() -> None:
    async def job() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await every(0.01, job, asyncio.Event(), retry_on=(PyMongoError,), event="t")
    with pytest.raises(ValueError, match="interval"):
        await every(0, job, asyncio.Event(), retry_on=(), event="t")


def test_daily_reads_everything_due_once_a_day_then_that_day_and_the_one_before() -> None:
    reads = DailyReads("next_due")
    day = date(2026, 3, 10)
    assert reads.days(day) is None  # the first run: every record whose day has come
    reads.done(day)
    # again that day: that day and the one before (a writer's clock a little behind)
    assert reads.days(day) == [date(2026, 3, 9), day]
    # a new day, or a clock moved either way: everything due, once
    assert reads.days(day + timedelta(days=1)) is None
    assert reads.days(day + timedelta(days=62)) is None
    assert reads.days(day - timedelta(days=1)) is None
    # a run that did not end (an error) is not counted: the next one reads everything due again
    reads.done(day + timedelta(days=1))
    assert reads.days(day + timedelta(days=1)) == [day, day + timedelta(days=1)]
    assert reads.days(day + timedelta(days=2)) is None


async def test_a_job_may_wait_for_its_first_interval() -> None:
    stop = asyncio.Event()
    runs: list[float] = []

    async def job() -> None:
        runs.append(time.monotonic())
        stop.set()

    started = time.monotonic()
    await asyncio.wait_for(every(0.1, job, stop, event="t", at_start=False), timeout=5)
    assert len(runs) == 1 and runs[0] - started >= 0.09
    stop.clear()
    stopped = asyncio.Event()
    stopped.set()
    await asyncio.wait_for(every(60, job, stopped, event="t", at_start=False), timeout=1)
    assert len(runs) == 1, "stopped during its first wait: never run"
