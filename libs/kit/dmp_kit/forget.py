"""Patient data kept in a process's memory is kept a bounded time.

A process keeps some of what it read about patients to answer the next request faster: a
dossier's content key, its listings decoded, consent's state and verdicts, a FHIR resource
rendered. The replica that purges a dossier drops what it holds of it at once (rule 13); the
others are not told. So every cache of patient data is registered here (`patient_data`) and
emptied whole every `patient_data_held_seconds` (DMP_PATIENT_DATA_HELD_SECONDS, five minutes
unless set): that long after a purge, no replica holds anything of the dossier, whether it
heard of the purge or not. An entry is read again at most once a period (a key, a listing):
nothing a request would notice.

Emptied whole rather than entry by entry at its age: a cache that times each entry
(cachetools' TTLCache) costs three to four times as much a lookup, and the hottest (a page's
listings) are looked up on every request.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import MutableMapping
from typing import Any, TypeVar

from dmp_kit.logging import get_logger
from dmp_kit.periodic import every

log = get_logger(__name__)

C = TypeVar("C", bound=MutableMapping[Any, Any])
_caches: list[weakref.ref[MutableMapping[Any, Any]]] = []


def patient_data(cache: C) -> C:
    """Registers `cache` as holding patient data (emptied every period); returns it."""
    _caches.append(weakref.ref(cache))
    return cache


def forget_all() -> int:
    """Empties every registered cache still in use; how many entries went."""
    gone = 0
    alive: list[weakref.ref[MutableMapping[Any, Any]]] = []
    for ref in _caches:
        cache = ref()
        if cache is None:
            continue  # its owner went (a test's store, say)
        alive.append(ref)
        gone += len(cache)
        cache.clear()
    _caches[:] = alive
    return gone


async def forgetting(stop: asyncio.Event, interval: float) -> None:
    """Empties the registered caches every `interval` seconds until `stop` is set."""

    async def forget() -> None:
        if gone := forget_all():
            log.debug("patient_data_forgotten", entries=gone)

    # Not at start: they are empty then (and a process's other caches are not its to empty).
    await every(interval, forget, stop, event="patient_data_forget_failed", at_start=False)
