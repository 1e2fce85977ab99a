"""Patient data kept in memory is emptied every period, in every cache registered
(dmp_kit.forget)."""

from __future__ import annotations

import asyncio
import gc
from collections import OrderedDict

from cachetools import LRUCache

from dmp_kit import forget
from dmp_kit.config import Settings
from dmp_kit.forget import forget_all, forgetting, patient_data


def test_every_registered_cache_is_emptied_and_one_no_longer_used_is_let_go() -> None:
    keys: OrderedDict[str, bytes] = patient_data(OrderedDict(a=b"k1", b=b"k2"))
    listings: LRUCache[str, int] = patient_data(LRUCache(10))
    listings["x"] = 1
    unregistered = {"kept": 1}  # not patient data: left alone
    gone_with_its_owner = patient_data(LRUCache[str, int](10))
    gone_with_its_owner["y"] = 2
    del gone_with_its_owner
    gc.collect()
    assert forget_all() >= 3  # other tests' caches may hold entries too
    assert not keys and not listings
    assert unregistered == {"kept": 1}
    alive = [ref() for ref in forget._caches]
    assert all(cache is not None for cache in alive), "a cache gone is not kept track of"
    assert any(cache is keys for cache in alive)
    keys["c"] = b"k3"  # filled again after: emptied at the next period
    assert forget_all() >= 1 and not keys


async def test_the_job_empties_them_each_period_until_stopped() -> None:
    held: OrderedDict[str, str] = patient_data(OrderedDict())
    stop = asyncio.Event()
    job = asyncio.create_task(forgetting(stop, interval=0.05))
    await asyncio.sleep(0.01)
    held["ins"] = "listing"  # read while the job waits for its first period
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not held:
            break
    assert not held, "emptied within a period"
    stop.set()
    await asyncio.wait_for(job, timeout=1)


def test_the_period_is_five_minutes_unless_set() -> None:
    assert Settings(env="dev").patient_data_held_seconds == 300.0
    assert Settings(env="dev", patient_data_held_seconds=30).patient_data_held_seconds == 30.0
