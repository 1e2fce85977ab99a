"""The benchmarks' count of database commands, by name and collection, on the real server: each
process's file is rewritten once a second at most while the counts change, and within half a
second once they stop."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from dmp_kit.mongo import CommandCounter, count_as
from dmp_stack.testing import Infra


async def test_commands_are_counted_by_collection_and_written_sparingly(
    infra: Infra, tmp_path: Path
) -> None:
    counter = CommandCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongo.url, event_listeners=[counter]
    )
    try:
        col = client["command_counter_test"]["things"]
        await col.insert_one({"_id": 1})
        await col.find_one({"_id": 1})
        await col.update_one({"_id": 1}, {"$set": {"a": 1}})

        async def relay() -> None:  # a background job: its commands are counted apart
            count_as("relay")
            await col.find_one({"_id": 1})

        await asyncio.create_task(relay())
        await col.find_one({"_id": 1})  # this task's are still the requests'
        await client.drop_database("command_counter_test")
    finally:
        await client.close()
    assert counter.counts["insert things"] == 1
    assert counter.counts["find things"] == 2
    assert counter.counts["find things (relay)"] == 1
    assert counter.counts["update things"] == 1

    path = tmp_path / "service.json"
    writes: list[float] = []
    counter.keep_in(path, every=0.05, busy=0.5)
    started = time.monotonic()
    stamp = 0.0
    while time.monotonic() - started < 2.0:  # counts changing all along: a busy process
        counter.counts["find things"] += 1
        if path.exists() and path.stat().st_mtime != stamp:
            stamp = path.stat().st_mtime
            writes.append(time.monotonic())
        await asyncio.sleep(0.01)
    assert 2 <= len(writes) <= 6, writes  # about every 0.5 s, not every check
    final = counter.counts.total()
    await asyncio.sleep(0.3)  # quiet: written within two checks
    assert json.loads(path.read_text())["commands"]["find things"] == counter.counts["find things"]
    assert sum(json.loads(path.read_text())["commands"].values()) == final
