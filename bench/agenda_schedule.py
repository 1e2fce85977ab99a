"""What a run of the agenda's reminder schedule costs as patients accumulate: `python -m
bench.run agenda_schedule` (N patients, default 10,000).

On one server of its own, N patients with open dossiers (birth dates over 85 years, both
sexes) are given to the agenda's store, and the schedule's first run announces what is due
for each and writes the day to look at each again. Then, alternating, 20 times each: a run of
the schedule as it is (the patients of its days, read by equality: none is due), a process's
first run of a day (every patient whose day has come, read by a range, after the records of
other rules were looked for), and the read every earlier run made (every patient with an open
dossier, each one's reminders computed again). Measured per run: wall time (median), this
process's CPU and FerretDB's, not PostgreSQL's (means).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.run import database, saved
from dmp_agenda.domain import PreventionRules
from dmp_agenda.schedule import Schedule
from dmp_agenda.store import HIDDEN, AgendaStore
from dmp_kit.bus import EventBus
from dmp_kit.clock import SystemClock
from dmp_kit.outbox import OutboxRelay
from dmp_stack.testing import own_infra

TICK = os.sysconf("SC_CLK_TCK")
ROUNDS = 20
RUNS = (
    "a run of the schedule",
    "a day's first run (a range)",
    "every patient read (before)",
)


def _cpu(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def _measure(patients: int, url: str, nats_url: str, db_pid: int) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True)
    store = AgendaStore(client["bench_agenda"])
    await store.ensure_indexes()
    rules = PreventionRules.parse(
        (resources.files("dmp_agenda") / "data" / "prevention.toml").read_text("utf-8")
    )
    relay = OutboxRelay(EventBus(nats_url, "bench-agenda"), [store.patients])
    schedule = Schedule(store, rules, relay, SystemClock(), interval=1.0)
    rng = random.Random(7)
    today = date.today()
    now = datetime.now(UTC)
    docs = [
        {
            "_id": f"{i:015d}",
            "birth_date": (today - timedelta(days=rng.randint(0, 85 * 365))).isoformat(),
            "sex": rng.choice("MF"),
            "known_at": now,
            "marks": {},
            "notified": [],
            "dossier_status": "open",
        }
        for i in range(patients)
    ]
    for first in range(0, patients, 1000):
        await store.patients.insert_many(docs[first : first + 1000])
    started = time.perf_counter()
    await schedule.once()  # as a process starting: every patient, each given their next day
    first_run_s = time.perf_counter() - started

    async def as_it_is() -> None:
        await schedule.once()

    async def first_of_the_day() -> None:
        schedule.reads.since = None  # as on a new day: every patient whose day has come
        await schedule.once()

    async def every_patient() -> None:
        query = {"dossier_status": "open", "prevention_messages": {"$ne": False}}
        async for doc in store.patients.find(query, HIDDEN):
            schedule._due(doc, today)

    samples: dict[str, dict[str, list[float]]] = {
        name: {"wall_ms": [], "process_cpu_ms": [], "ferretdb_cpu_ms": []} for name in RUNS
    }
    for _ in range(ROUNDS):
        for name, run in zip(RUNS, (as_it_is, first_of_the_day, every_patient), strict=True):
            cpu, db_cpu, wall = (
                os.times().user + os.times().system,
                _cpu(db_pid),
                time.perf_counter(),
            )
            await run()
            samples[name]["wall_ms"].append(time.perf_counter() - wall)
            samples[name]["process_cpu_ms"].append(os.times().user + os.times().system - cpu)
            samples[name]["ferretdb_cpu_ms"].append(_cpu(db_pid) - db_cpu)
    await client.close()
    # Wall: the median run. CPU: the mean (the kernel counts it in ticks of 10 ms).
    runs = {
        name: {
            k: round((statistics.median(v) if k == "wall_ms" else statistics.mean(v)) * 1000, 2)
            for k, v in series.items()
        }
        for name, series in samples.items()
    }
    return {"first_run_s": round(first_run_s, 1), "per_run": runs}


def agenda_schedule(patients: int) -> dict[str, Any]:
    with own_infra("dmp-bench-", fault_proxy=False) as infra:
        assert infra.mongo.pid is not None
        measured = asyncio.run(_measure(patients, infra.mongo.url, infra.nats.url, infra.mongo.pid))
    runs = measured["per_run"]
    result = {
        "scenario": "agenda_schedule",
        "description": " ".join(__doc__.split("\n\n")[1].split()) if __doc__ else "",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": database(),
        "patients": patients,
        "rounds": ROUNDS,
        **measured,
        "ratio_wall": round(
            runs["every patient read (before)"]["wall_ms"]
            / runs["a run of the schedule"]["wall_ms"]
        ),
    }
    return saved("agenda_schedule.json", result)
