"""The audit log: appends records in stream order, signs tree heads, serves entries and proofs.

One writer owns the log. It rebuilds its state from the stored chunks at start (refusing a log
that does not verify), then appends each batch of records as one chunk. The chunk is the
commit point: the tree, the dossier chains and the stream position move only once it is stored,
and a chunk already stored at our position means another writer exists — we stop appending.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

import structlog

from dmp.events.v1 import envelope_pb2
from dmp_audit.config import AuditSettings
from dmp_audit.entry import Entry, TreeHead, TreeHeadSigner, clean_ins, rfc3339
from dmp_audit.merkle import Tree
from dmp_audit.note import Checkpoint, NoteSigner
from dmp_audit.store import AuditStore
from dmp_audit.tiles import Tile, tile_hashes
from dmp_audit.verify import LogState, scan
from dmp_kit.clock import Clock

log = structlog.get_logger("dmp.audit")


class LogCorrupted(RuntimeError):
    """The stored log does not verify: appending to it would bury the evidence."""


@dataclass(frozen=True)
class Record:
    """One message from the AUDIT stream: its stream sequence and its envelope (None when the
    payload could not be decoded)."""

    stream_seq: int
    event: envelope_pb2.Envelope | None


class AuditLog:
    def __init__(
        self,
        store: AuditStore,
        signer: TreeHeadSigner,
        clock: Clock,
        settings: AuditSettings,
    ) -> None:
        self.store = store
        self.signer = signer
        self.notes = NoteSigner(settings.origin, signer.private_key)
        self._note: tuple[int, bytes] = (-1, b"")
        self.clock = clock
        self.settings = settings
        self.state = LogState()
        self.write_lock = asyncio.Lock()
        self._chunks: OrderedDict[int, list[bytes]] = OrderedDict()
        self._signed_at = 0.0
        self.loaded = False

    # start -----------------------------------------------------------------------------

    async def load(self) -> None:
        started = time.perf_counter()
        state = await scan(
            self.store, {self.signer.key_id: self.signer.public_key}, for_service=True
        )
        if state.problem is not None:
            log.critical("audit_log_corrupted", problem=str(state.problem))
            raise LogCorrupted(str(state.problem))
        self.state = state
        self.loaded = True
        log.info(
            "audit_log_loaded",
            entries=state.size,
            signed=state.heads[-1].size if state.heads else None,
            seconds=round(time.perf_counter() - started, 3),
        )
        await self.sign(force=not state.heads or state.unsigned > 0)

    # append ----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.state.size

    @property
    def stream_last(self) -> int:
        return self.state.stream_last

    async def append(self, records: Sequence[Record]) -> int:
        """Append the records not yet in the log, in stream order; returns how many."""
        async with self.write_lock:
            fresh = self._after_watermark(records)
            if not fresh:
                return 0
            stream_last = fresh[-1].stream_seq
            events = await self._first_sightings(fresh)
            batch = self._entries(events)
            if batch:
                first = self.size
                await self.store.write_chunk(first, [data for data, _, _ in batch], stream_last)
                self._commit(first, batch)
            self.state.stream_last = stream_last
            await self._maybe_sign()
            return len(batch)

    def _after_watermark(self, records: Sequence[Record]) -> list[Record]:
        ordered = sorted(records, key=lambda r: r.stream_seq)
        fresh = [r for r in ordered if r.stream_seq > self.state.stream_last]
        if fresh and fresh[0].stream_seq > self.state.stream_last + 1 and self.state.stream_last:
            log.warning(
                "audit_stream_gap",
                after=self.state.stream_last,
                resumed_at=fresh[0].stream_seq,
            )
        return fresh

    async def _first_sightings(
        self, records: Sequence[Record]
    ) -> list[tuple[Record, envelope_pb2.Envelope]]:
        """The records whose event id the log has not seen (idempotent on the event id)."""
        seen: set[str] = set()
        candidates: list[tuple[Record, envelope_pb2.Envelope]] = []
        for record in records:
            event = record.event
            if event is None:
                log.error("audit_record_undecodable", stream_seq=record.stream_seq)
                continue
            if event.WhichOneof("payload") != "audit_record" or not event.id:
                log.error("audit_record_unexpected", stream_seq=record.stream_seq, type=event.type)
                continue
            if event.id in seen:
                continue
            seen.add(event.id)
            candidates.append((record, event))
        taken = await self.store.claim_events([(e.id, r.stream_seq) for r, e in candidates])
        fresh = []
        for record, event in candidates:
            claimed_by = taken.get(event.id)
            if claimed_by is None or claimed_by == record.stream_seq:
                fresh.append((record, event))
            elif claimed_by > self.state.stream_last:
                # claimed by an attempt that never reached the log (it crashed): ours now
                await self.store.reclaim_event(event.id, record.stream_seq)
                fresh.append((record, event))
            else:
                log.info("audit_record_duplicate", event_id=event.id)
        return fresh

    def _entries(
        self, events: Sequence[tuple[Record, envelope_pb2.Envelope]]
    ) -> list[tuple[bytes, bytes, str]]:
        """(entry bytes, leaf hash, ins) for each event, chained to each dossier's last entry."""
        chains = self.state.chains
        batch: list[tuple[bytes, bytes, str]] = []
        latest: dict[str, tuple[int, str]] = {}
        for seq, (_, event) in enumerate(events, self.size):
            ins = clean_ins(event.patient_ins)
            last = (latest.get(ins) or chains.get(ins)) if ins else None
            n, prev = (0, "") if last is None else (last[0] + 1, last[1])
            data = entry_of(event, seq, ins, n, prev).to_bytes()
            leaf = hashlib.sha256(b"\x00" + data).digest()
            if ins:
                latest[ins] = (n, leaf.hex())
            batch.append((data, leaf, ins))
        return batch

    def _commit(self, first: int, batch: list[tuple[bytes, bytes, str]]) -> None:
        state = self.state
        state.tree.extend([leaf for _, leaf, _ in batch])
        state.size += len(batch)
        for seq, (_, leaf, ins) in enumerate(batch, first):
            if ins:
                trail = state.trails.get(ins)
                if trail is None:
                    state.trails[ins] = trail = array("q")
                state.chains[ins] = (len(trail), leaf.hex())
                trail.append(seq)
        state.chunk_starts.append(first)
        self._remember_chunk(first, [data for data, _, _ in batch])

    # tree heads ------------------------------------------------------------------------

    async def _maybe_sign(self) -> None:
        latest = self.state.heads[-1].size if self.state.heads else -1
        due = time.monotonic() - self._signed_at >= self.settings.checkpoint_interval_seconds
        if self.size - latest >= self.settings.checkpoint_every_entries or (
            due and self.size > latest
        ):
            await self.sign()

    async def tick(self) -> None:
        """Called every so often: sign a head if entries arrived since the last one."""
        async with self.write_lock:
            await self._maybe_sign()

    async def sign(self, force: bool = False) -> TreeHead:
        state = self.state
        if state.heads and state.heads[-1].size == self.size and not force:
            return state.heads[-1]
        head = self.signer.sign(self.size, state.tree.root(), self.clock.now())
        await self.store.save_head(head)
        if not state.heads or state.heads[-1].size < head.size:
            state.heads.append(head)
        self._signed_at = time.monotonic()
        return head

    def checkpoint(self) -> TreeHead:
        return self.state.heads[-1]

    def checkpoint_note(self) -> bytes:
        """The newest signed head as a C2SP checkpoint note, signed with the same key (its
        bytes depend on the size and root only: signed once per head)."""
        head = self.checkpoint()
        if self._note[0] != head.size:
            text = Checkpoint(self.notes.name, head.size, bytes.fromhex(head.root_hash)).text()
            self._note = (head.size, self.notes.sign(text))
        return self._note[1]

    def tile(self, tile: Tile) -> bytes | None:
        """A hash tile of the newest signed tree (None if that tree does not hold it): what is
        published is what a signed head covers."""
        return tile_hashes(self.state.tree, tile, self.checkpoint().size)

    # reads -----------------------------------------------------------------------------

    @property
    def tree(self) -> Tree:
        return self.state.tree

    def trail(self, ins: str) -> array[int]:
        return self.state.trails.get(ins, array("q"))

    async def entry(self, seq: int) -> bytes:
        starts = self.state.chunk_starts
        index = bisect.bisect_right(starts, seq) - 1
        if index < 0 or seq >= self.size:
            raise IndexError(seq)
        first = starts[index]
        chunk = self._chunks.get(first)
        if chunk is None:
            chunk = await self.store.chunk(first)
            if chunk is None:
                raise LogCorrupted(f"the chunk at {first} has gone")
            self._remember_chunk(first, chunk)
        else:
            self._chunks.move_to_end(first)
        return chunk[seq - first]

    def _remember_chunk(self, first: int, entries: list[bytes]) -> None:
        self._chunks[first] = entries
        while len(self._chunks) > self.settings.chunk_cache:
            self._chunks.popitem(last=False)


def entry_of(event: envelope_pb2.Envelope, seq: int, ins: str, n: int, prev: str) -> Entry:
    record = event.audit_record
    raw_ins = event.patient_ins
    query = record.query if raw_ins == ins else f"{record.query} ins={raw_ins!r}".strip()
    return Entry(
        seq=seq,
        ins=ins,
        n=n,
        prev=prev,
        at=rfc3339(event.occurred_at.ToDatetime(tzinfo=UTC)),
        event_id=event.id,
        source=event.source,
        request_id=event.trace.request_id,
        actor_kind=event.actor.kind,
        actor_id=event.actor.id,
        actor_name=record.actor_name,
        actor_profession=event.actor.profession,
        action=record.action,
        document_id=record.document_id,
        query=query,
        outcome=record.outcome,
        mode=record.mode or "normal",
        reason=record.reason,
    )
