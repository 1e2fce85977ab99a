"""What the gateway makes of a document's metadata (its JSON in a list, its FHIR
DocumentReference), kept per version of that metadata: a page of 200 is made once, then served
from memory.

Keyed by the metadata's bytes (serialised deterministically) and what else the result depends
on (the server's base URL, the author's name): any change of the document (a mask, a new
version, a status) is another key, and the entry made before it ages out. Nothing in it depends
on who asks: the dossier service has chosen which documents they may see. Bounded, least
recently used out first, and emptied every few minutes with the rest of the patient data a
process holds (dmp_kit.forget).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp_kit.forget import patient_data

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class PerVersion(Generic[K, T]):
    def __init__(self, size: int) -> None:
        self.kept: LRUCache[tuple[K, bytes], T] = patient_data(LRUCache(size))

    def get(self, m: pb.DocumentMetadata, extra: K, make: Callable[[], T]) -> T:
        """What `make` makes of `m` (with `extra`), made once per version of `m`."""
        key = (extra, m.SerializeToString(deterministic=True))
        found = self.kept.get(key)
        if found is None:
            found = self.kept[key] = make()
        return found
