"""Re-reading the whole stored log: every entry hash, every dossier chain, every signed head.

The service runs this at start (it will not append to a log it cannot vouch for) and
`dmp audit verify` runs it on demand. It reports the first inconsistency it meets:

- a signed tree head stored under another size, signed by an unknown key or outside that key's
  validity period (keys.py), or whose signature does not hold;
- a chunk missing, overlapping, unreadable, or holding an entry that is not canonical;
- an entry whose `seq` is not its position, or whose dossier chain (`n`, `prev`) does not
  follow from the dossier's previous entry;
- a tree head whose root is not the root recomputed from the entries, or that covers more
  entries than the log holds (the tail was cut).

What no stored data can show: a tail cut together with every tree head that covered it. A
tree head obtained earlier from `/v1/audit/checkpoint` (a witness) closes that gap.

How it goes fast: each chunk is checked on its own by `check_chunk` — decompress, the entries'
heads, their leaf hashes, the chain links inside the chunk, and the roots of the complete
subtrees the chunk covers — in worker processes when the log is large. What crosses chunks is
small and done here in order: each dossier's first link in the chunk, and the tree's frontier
(at most log2(n) subtree roots), from which the root at any signed size follows. The chunks are
read by a task of their own, up to IN_FLIGHT ahead of the merge, so that the database's read —
one cursor, served serially, the longest part on a small machine — never waits for the checks.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hashlib
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dmp_audit.entry import TreeHead
from dmp_audit.keys import LogKey, head_problem
from dmp_audit.merkle import HASH_SIZE, empty_root, node_hash
from dmp_audit.store import AuditStore, unpack_text
from dmp_audit.tiles import BadEdge, TiledTree

Progress = Callable[[int], None]
# The fixed head of a version-1 entry (entry.py). Canonical JSON escapes every quote inside a
# string, so this text can only occur where an entry starts.
HEADS = re.compile(rb'\{"v":1,"seq":(\d+),"ins":"([0-9A-Za-z]*)","n":(\d+),"prev":"([0-9a-f]*)",')
PARALLEL_FROM_CHUNKS = 64  # below this, worker processes cost more than they save
# Workers forked from a server started once, single-threaded, with this module loaded: a
# worker forked from the caller itself (a service, a test run) could inherit a lock another
# of its threads held at that moment, and wait on it for ever.
WORKERS = multiprocessing.get_context("forkserver")
WORKERS.set_forkserver_preload([__name__])
IN_FLIGHT = 16

Subtree = tuple[int, bytes]  # (height, root) of a complete, aligned subtree


@dataclass(frozen=True)
class Problem:
    what: str
    seq: int | None = None

    def __str__(self) -> str:
        return self.what if self.seq is None else f"entry {self.seq}: {self.what}"


@dataclass
class LogState:
    """What a scan found: the size, each dossier's chain head, the chunk map, and the heads
    that held."""

    size: int = 0
    # ins -> (n of its newest entry, that entry's leaf hash, hex)
    chains: dict[str, tuple[int, str]] = field(default_factory=dict)
    chunk_starts: list[int] = field(default_factory=list)
    stream_last: int = 0
    heads: list[TreeHead] = field(default_factory=list)
    problem: Problem | None = None
    db_seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def unsigned(self) -> int:
        """Entries after the newest signed head."""
        return self.size - (self.heads[-1].size if self.heads else 0)


# A dossier's link, as one bytes value so that a chunk's links compare in one operation:
# b"<n>:<prev>", the `n` and `prev` of an entry; a dossier's first entry links to nothing.
FIRST_LINK = b"0:"


@dataclass(frozen=True)
class Dossiers:
    """The dossiers a chunk is about, one column per field, each column but `first_seq` joined
    by newlines (one bytes value: cheap to hand between processes, and compared at once): the
    link each dossier's first entry here carries, and the link its next entry must carry."""

    ins: bytes
    first_seq: list[int]
    need: bytes
    give: bytes


@dataclass(frozen=True)
class Checked:
    """What `check_chunk` found in one chunk."""

    count: int
    subtrees: list[Subtree]  # the chunk's range cut into complete, aligned subtrees
    prefixes: dict[int, list[Subtree]]  # for a signed size inside the chunk: its prefix, cut so
    dossiers: Dossiers


# A chunk's check on its way: what it found, or (seq, what) for its first inconsistency.
Verdict = asyncio.Future[Checked | tuple[int, str]]


def check_chunk(
    data: bytes,
    count: int,
    first: int,
    signed_sizes: tuple[int, ...] = (),
) -> Checked | tuple[int, str]:
    """Check one chunk alone; (seq, what) for its first inconsistency."""
    try:
        text = unpack_text(data)
    except (zstandard.ZstdError, TypeError, ValueError) as exc:
        return first, f"the chunk at {first} is unreadable ({type(exc).__name__})"
    entries = text.split(b"\n")
    if len(entries) != count:
        return first, f"the chunk at {first} holds {len(entries)} entries, not {count}"
    heads = HEADS.findall(text)
    stated = [h[0] for h in heads]
    if len(heads) != count or stated != [b"%d" % seq for seq in range(first, first + count)]:
        for seq, entry in enumerate(entries, first):
            match = HEADS.match(entry)
            if match is None:
                return seq, "the entry does not start as a version-1 entry"
            if int(match.group(1)) != seq:
                return seq, f"the entry says it is entry {int(match.group(1))}"
        return first, f"the chunk at {first} holds entries out of place"
    sha256 = hashlib.sha256
    leaves = [sha256(b"\x00" + entry).digest() for entry in entries]
    names = [head[1] for head in heads]
    # Where each dossier's entries start and end in the chunk, found by dicts built in C. The
    # entries are walked one by one in Python only when some dossier has several in the chunk
    # (their links to each other) or some entry is about no dossier.
    firsts = dict(zip(reversed(names), range(count - 1, -1, -1), strict=True))
    lasts = dict(zip(names, range(count), strict=True))
    unattached = firsts.pop(b"", None) is not None
    lasts.pop(b"", None)
    if unattached or len(lasts) < count:
        problem = _links_inside(heads, leaves, first)
        if problem is not None:
            return problem
    dossiers = list(lasts)
    starts = list(map(firsts.__getitem__, dossiers))
    ends = list(lasts.values())
    end = first + count
    return Checked(
        count=count,
        subtrees=_subtrees(leaves, first, first, end),
        prefixes={s: _subtrees(leaves, first, first, s) for s in signed_sizes if first < s < end},
        dossiers=Dossiers(
            ins=b"\n".join(dossiers),
            first_seq=[first + i for i in starts],
            need=b"\n".join([b"%d:%s" % (int(heads[i][2]), heads[i][3]) for i in starts]),
            give=b"\n".join(
                [b"%d:%s" % (int(heads[i][2]) + 1, binascii.hexlify(leaves[i])) for i in ends]
            ),
        ),
    )


def _links_inside(
    heads: list[tuple[bytes, bytes, bytes, bytes]],
    leaves: list[bytes],
    first: int,
) -> tuple[int, str] | None:
    """The links between entries of the same dossier inside one chunk, and that an entry about
    no dossier carries no chain: (seq, what) for the first that does not hold."""
    previous: dict[bytes, int] = {}
    for i, (_, ins, n, prev) in enumerate(heads):
        if not ins:
            if int(n) or prev:
                return first + i, "an entry about no dossier carries a chain"
            continue
        before = previous.get(ins)
        previous[ins] = i
        if before is None:
            continue
        if int(n) != int(heads[before][2]) + 1 or prev != binascii.hexlify(leaves[before]):
            return first + i, "the dossier's hash chain is broken here"
    return None


def _subtrees(leaves: list[bytes], offset: int, start: int, end: int) -> list[Subtree]:
    """[start, end) cut into complete subtrees aligned on their size, left to right."""
    sha256 = hashlib.sha256
    out = []
    while start < end:
        height = 0
        while start % (2 << height) == 0 and start + (2 << height) <= end:
            height += 1
        # node = SHA-256(0x01 ‖ left ‖ right): adjacent hashes of a level, joined, pair up
        level = b"".join(leaves[start - offset : start - offset + (1 << height)])
        while len(level) > HASH_SIZE:
            level = b"".join(
                [sha256(b"\x01" + level[i : i + 64]).digest() for i in range(0, len(level), 64)]
            )
        out.append((height, level))
        start += 1 << height
    return out


def _push(frontier: list[Subtree], subtrees: list[Subtree]) -> list[Subtree]:
    frontier = list(frontier)
    for height, node in subtrees:
        while frontier and frontier[-1][0] == height:
            node = node_hash(frontier.pop()[1], node)
            height += 1
        frontier.append((height, node))
    return frontier


def _root(frontier: list[Subtree]) -> bytes:
    """MTH of the tree whose complete subtrees are `frontier` (largest first)."""
    if not frontier:
        return empty_root()
    root = frontier[-1][1]
    for _, node in reversed(frontier[:-1]):
        root = node_hash(node, root)
    return root


async def scan(
    store: AuditStore,
    keys: Mapping[str, LogKey | Ed25519PublicKey],
    *,
    witness: TreeHead | None = None,
    progress: Progress | None = None,
    parallel: bool | None = None,
) -> LogState:
    """Read and check the whole log. `state.problem` is the first inconsistency, if any.
    `parallel` checks chunks in worker processes (by default, when there are many)."""
    state = LogState()
    tick = time.perf_counter()
    stored_heads = await store.heads()
    chunk_count = await store.chunk_count()
    state.db_seconds += time.perf_counter() - tick
    for stored_id, head in stored_heads:
        if stored_id != head.size:
            return _fail(state, f"the tree head stored as {stored_id} says size {head.size}")
        problem = head_problem(head, keys)
        if problem is not None:
            return _fail(state, problem)
    heads = sorted(
        [head for _, head in stored_heads] + ([witness] if witness else []), key=lambda h: h.size
    )
    signed_sizes = tuple(sorted({h.size for h in heads}))
    pool: Executor | None = None
    if parallel or (parallel is None and chunk_count >= PARALLEL_FROM_CHUNKS):
        pool = ProcessPoolExecutor(max_workers=os.cpu_count() or 2, mp_context=WORKERS)
    try:
        await _scan_chunks(state, store, heads, signed_sizes, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return state


async def _scan_chunks(
    state: LogState,
    store: AuditStore,
    heads: list[TreeHead],
    signed_sizes: tuple[int, ...],
    pool: Executor | None,
    progress: Progress | None,
) -> None:
    loop = asyncio.get_running_loop()
    chains: dict[bytes, bytes] = {}  # ins -> the link its next entry must carry
    frontier: list[Subtree] = []
    pending = 0  # index in `heads` of the next one to check

    def submit(doc: Mapping[str, Any], first: int) -> Verdict:
        args = (doc["data"], doc["count"], first, signed_sizes)
        if pool is None:
            future: Verdict = loop.create_future()
            future.set_result(check_chunk(*args))
            return future
        return loop.run_in_executor(pool, check_chunk, *args)

    while pending < len(heads) and heads[pending].size == 0:  # the empty tree's heads
        if heads[pending].root_hash != empty_root().hex():
            _fail(state, "the tree head of size 0 does not match the empty tree")
            return
        state.heads.append(heads[pending])
        pending += 1
    # The chunks are read and handed to the workers by a task of their own, ahead of the
    # checking: the database's next batch is on its way while the workers check and this loop
    # merges (on a small machine the database's serial read is the longest part of the scan,
    # and it must not wait for the others).
    room = asyncio.Semaphore(IN_FLIGHT)
    in_flight: asyncio.Queue[tuple[int, Verdict] | None] = asyncio.Queue()
    reader = asyncio.create_task(_read_chunks(state, store, submit, room, in_flight))
    try:
        while (item := await in_flight.get()) is not None:
            first, future = item
            checked = await future
            room.release()
            now = time.perf_counter()
            if isinstance(checked, tuple):
                _fail(state, checked[1], checked[0])
                return
            # Each dossier's first link here against where its chain stood: done in C, as this
            # process does it for every entry of the log while the workers share the rest.
            d = checked.dossiers
            names = d.ins.split(b"\n") if d.ins else []
            if b"\n".join(map(chains.get, names, repeat(FIRST_LINK))) != d.need:
                needs = d.need.split(b"\n")
                broken = min(
                    seq
                    for seq, name, need in zip(d.first_seq, names, needs, strict=True)
                    if chains.get(name, FIRST_LINK) != need
                )
                _fail(state, "the dossier's hash chain is broken here", broken)
                return
            if names:
                chains.update(zip(names, d.give.split(b"\n"), strict=True))
            end = first + checked.count
            while pending < len(heads) and heads[pending].size <= end:
                head = heads[pending]
                if head.size == end:
                    root = _root(_push(frontier, checked.subtrees))
                elif head.size <= first:
                    root = _root(frontier)
                else:
                    root = _root(_push(frontier, checked.prefixes[head.size]))
                if root.hex() != head.root_hash:
                    _fail(state, f"the tree head of size {head.size} does not match the log")
                    return
                state.heads.append(head)
                pending += 1
            frontier = _push(frontier, checked.subtrees)
            state.chunk_starts.append(first)
            state.size = end
            state.cpu_seconds += time.perf_counter() - now
            if progress is not None:
                progress(checked.count)
        await reader  # its error, if the database failed
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    if pending < len(heads):
        _fail(
            state,
            f"a signed tree head covers {heads[pending].size} entries but the log holds "
            f"{state.size}: its tail was cut",
        )
        return
    edge = await store.load_edge()
    if edge is not None:
        # The stored tree the service serves from: its edge must give the entries' root.
        try:
            stored = TiledTree(store.load_tiles, edge["size"], edge["levels"])
        except BadEdge as exc:
            _fail(state, str(exc))
            return
        if stored.size > state.size:
            if await store.chunk(state.size) is None:  # not grown meanwhile: entries went
                _fail(state, f"the stored tree covers {stored.size} entries, the log {state.size}")
            return  # else the running service appended while this scan read
        if stored.size == state.size and stored.root() != _root(frontier):
            _fail(state, "the stored tree's edge does not match the entries")
            return
    state.chains = {ins.decode(): _chain_head(link) for ins, link in chains.items()}


async def _read_chunks(
    state: LogState,
    store: AuditStore,
    submit: Callable[[Mapping[str, Any], int], Verdict],
    room: asyncio.Semaphore,
    out: asyncio.Queue[tuple[int, Verdict] | None],
) -> None:
    """Each chunk in log order, its header checked, handed to `submit`: (first, its verdict)
    into `out` while `room` allows, then None at the end, after the first malformed chunk, or
    when the database fails (the caller then awaits this task for its error)."""
    loop = asyncio.get_running_loop()
    expected = 0  # where the next chunk must start
    chunks = aiter(store.scan_chunks())
    try:
        while True:
            await room.acquire()
            tick = time.perf_counter()
            doc = await anext(chunks, None)
            state.db_seconds += time.perf_counter() - tick
            if doc is None:
                break
            problem = _chunk_header(doc, expected, state.stream_last)
            if problem is not None:
                out.put_nowait((expected, _failed(loop, expected, problem)))
                break
            state.stream_last = doc["stream_last"]
            out.put_nowait((expected, submit(doc, expected)))
            expected += doc["count"]
    finally:
        out.put_nowait(None)


def _chain_head(link: bytes) -> tuple[int, str]:
    """(n, leaf hash) of the entry that `link`, its successor's, points at."""
    n, leaf = link.split(b":")
    return int(n) - 1, leaf.decode()


def _chunk_header(doc: Mapping[str, Any], first: int, stream_last: int) -> str | None:
    """Is this the chunk expected at `first`, and well formed?"""
    try:
        at, count, last, data = doc["_id"], doc["count"], doc["stream_last"], doc["data"]
    except KeyError as exc:
        return f"the chunk at {first} lacks {exc}"
    if not isinstance(count, int) or not isinstance(last, int) or not isinstance(data, bytes):
        return f"the chunk at {first} is malformed"
    if at != first:
        return f"the chunk at {at} leaves entries {'missing' if at > first else 'overlapping'}"
    if last < stream_last:
        return f"the chunk at {first} goes back in the stream"
    return None


def _failed(loop: asyncio.AbstractEventLoop, seq: int, what: str) -> Verdict:
    future: Verdict = loop.create_future()
    future.set_result((seq, what))
    return future


def _fail(state: LogState, what: str, seq: int | None = None) -> LogState:
    state.problem = Problem(what, seq)
    return state
