"""Re-reading the whole stored log: every entry hash, every dossier chain, every signed head.

The service runs this at start (it will not append to a log it cannot vouch for) and
`dmp audit verify` runs it on demand. It reports the first inconsistency it meets:

- a signed tree head stored under another size, signed by an unknown key, or whose signature
  does not hold;
- a chunk missing, overlapping, unreadable, or holding an entry that is not canonical;
- an entry whose `seq` is not its position, or whose dossier chain (`n`, `prev`) does not
  follow from the dossier's previous entry;
- a tree head whose root is not the root recomputed from the entries, or that covers more
  entries than the log holds (the tail was cut).

What no stored data can show: a tail cut together with every tree head that covered it. A
tree head obtained earlier from `/v1/audit/checkpoint` (a witness) closes that gap.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dmp_audit.entry import MalformedEntry, TreeHead, chain_fields, signature_valid
from dmp_audit.merkle import Tree
from dmp_audit.store import AuditStore, unpack

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Problem:
    what: str
    seq: int | None = None

    def __str__(self) -> str:
        return self.what if self.seq is None else f"entry {self.seq}: {self.what}"


@dataclass
class LogState:
    """What a scan rebuilt: the tree, each dossier's chain head and trail, the chunk map."""

    tree: Tree = field(default_factory=Tree)
    # ins -> (n of its newest entry, that entry's leaf hash, hex)
    chains: dict[str, tuple[int, str]] = field(default_factory=dict)
    # ins -> the seqs of its entries, oldest first
    trails: dict[str, array[int]] = field(default_factory=dict)
    chunk_starts: list[int] = field(default_factory=list)
    stream_last: int = 0
    heads: list[TreeHead] = field(default_factory=list)
    problem: Problem | None = None
    db_seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def size(self) -> int:
        return len(self.tree)

    @property
    def unsigned(self) -> int:
        """Entries after the newest signed head."""
        return self.size - (self.heads[-1].size if self.heads else 0)


async def scan(
    store: AuditStore,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    witness: TreeHead | None = None,
    progress: Progress | None = None,
) -> LogState:
    """Read and check the whole log. `state.problem` is the first inconsistency, if any."""
    state = LogState()
    tick = time.perf_counter()
    stored_heads = await store.heads()
    state.db_seconds += time.perf_counter() - tick
    for stored_id, head in stored_heads:
        if stored_id != head.size:
            return _fail(state, f"the tree head stored as {stored_id} says size {head.size}")
        key = keys.get(head.key_id)
        if key is None:
            return _fail(state, f"the tree head of size {head.size} names an unknown key")
        if not signature_valid(head, key):
            return _fail(state, f"the signature of the tree head of size {head.size} is wrong")
    heads = [head for _, head in stored_heads]
    if witness is not None:
        heads = sorted([*heads, witness], key=lambda h: h.size)
    pending = 0  # index in `heads` of the next one to check
    tree, chains, trails = state.tree, state.chains, state.trails
    sha256 = hashlib.sha256
    chunks = store.scan_chunks()
    while True:
        tick = time.perf_counter()
        doc = await anext(chunks, None)
        now = time.perf_counter()
        state.db_seconds += now - tick
        if doc is None:
            break
        first = len(tree)
        try:
            entries, stream_last = _chunk(doc, first, state.stream_last)
        except _BadChunk as exc:
            return _fail(state, str(exc), first)
        for seq, data in enumerate(entries, first):
            leaf = sha256(b"\x00" + data).digest()
            try:
                stated, ins, n, prev = chain_fields(data)
            except MalformedEntry as exc:
                return _fail(state, str(exc), seq)
            if stated != seq:
                return _fail(state, f"the entry says it is entry {stated}", seq)
            if ins:
                last = chains.get(ins)
                expected = (0, "") if last is None else (last[0] + 1, last[1])
                if (n, prev) != expected:
                    return _fail(state, "the dossier's hash chain is broken here", seq)
                chains[ins] = (n, leaf.hex())
                trail = trails.get(ins)
                if trail is None:
                    trails[ins] = trail = array("q")
                trail.append(seq)
            elif n or prev:
                return _fail(state, "an entry about no dossier carries a chain", seq)
            tree.append(leaf)
        state.chunk_starts.append(first)
        state.stream_last = stream_last
        while pending < len(heads) and heads[pending].size <= len(tree):
            head = heads[pending]
            if tree.root(head.size).hex() != head.root_hash:
                return _fail(state, f"the tree head of size {head.size} does not match the log")
            state.heads.append(head)
            pending += 1
        state.cpu_seconds += time.perf_counter() - now
        if progress is not None:
            progress(len(entries))
    while pending < len(heads) and heads[pending].size == 0:
        state.heads.append(heads[pending])
        pending += 1
    if pending < len(heads):
        return _fail(
            state,
            f"a signed tree head covers {heads[pending].size} entries but the log holds "
            f"{len(tree)}: its tail was cut",
        )
    return state


class _BadChunk(ValueError):
    pass


def _chunk(doc: Mapping[str, Any], first: int, stream_last: int) -> tuple[list[bytes], int]:
    """The chunk's entries and stream position, if it is the chunk expected at `first`."""
    try:
        at, count, last, data = doc["_id"], doc["count"], doc["stream_last"], doc["data"]
        if at != first:
            what = "missing" if at > first else "overlapping"
            raise _BadChunk(f"the chunk at {at} leaves entries {what}")
        if last < stream_last:
            raise _BadChunk(f"the chunk at {first} goes back in the stream")
        return unpack(data, count), last
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        if isinstance(exc, _BadChunk):
            raise
        raise _BadChunk(f"the chunk at {first} is unreadable ({type(exc).__name__})") from exc


def _fail(state: LogState, what: str, seq: int | None = None) -> LogState:
    state.problem = Problem(what, seq)
    return state
