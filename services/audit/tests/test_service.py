"""The audit service on real servers: fed from JetStream, across duplicates and a crash."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pymongo import AsyncMongoClient

from dmp.audit.v1 import audit_pb2 as pb
from dmp.audit.v1 import audit_pb2_grpc
from dmp.events.v1 import envelope_pb2
from dmp_audit import merkle
from dmp_audit.consumer import SEQUENCER
from dmp_audit.entry import Entry
from dmp_audit.store import AuditStore
from dmp_audit.verify import LogState, scan
from dmp_kit.auth import Principal
from dmp_kit.bus import EventBus
from dmp_kit.clock import SystemClock
from dmp_kit.events import audit_event
from dmp_kit.rpc.status import error_from_rpc
from dmp_stack.stack import stop_pid
from dmp_stack.testing import RunningStack, make_ins, make_rpps

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def audit(stack: RunningStack) -> AsyncIterator[audit_pb2_grpc.AuditServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{stack.stack.ports.grpc['audit']}")
    yield audit_pb2_grpc.AuditServiceStub(channel)
    await channel.close()


@pytest.fixture(scope="module")
async def bus(stack: RunningStack) -> AsyncIterator[EventBus]:
    bus = EventBus(stack.infra.nats.url, "audit-test")
    await bus.connect()
    await bus.ensure_streams()
    yield bus
    await bus.close()


def records(n: int, ins: str) -> list[envelope_pb2.Envelope]:
    who = Principal(kind="professional", subject="s", rpps=make_rpps(), profession="10")
    return [
        audit_event(
            source="dossier",
            clock=SystemClock(),
            caller=who,
            patient_ins=ins,
            action="read",
            outcome="success",
            document_id=f"doc-{i}",
        )
        for i in range(n)
    ]


async def stored_log(stack: RunningStack, audit: audit_pb2_grpc.AuditServiceStub) -> LogState:
    keys = await audit.ListPublicKeys(pb.ListPublicKeysRequest())
    public = {
        k.key_id: Ed25519PublicKey.from_public_bytes(base64.b64decode(k.public_key))
        for k in keys.keys
    }
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.infra.mongo.url)
    try:
        state = await scan(AuditStore(client["audit"]), public)
    finally:
        await client.close()
    assert state.problem is None, str(state.problem)
    return state


async def entries_of(
    stack: RunningStack, audit: audit_pb2_grpc.AuditServiceStub, ins: str, expect: int
) -> list[Entry]:
    """The dossier's entries as stored, once the service has appended `expect` of them (the
    whole stored log verifying each time)."""
    deadline = time.monotonic() + 60
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.infra.mongo.url)
    store = AuditStore(client["audit"])
    try:
        while True:
            await stored_log(stack, audit)
            rows = await store.trail_page(ins, 2**62, 10_000)
            if len(rows) >= expect or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        found = []
        for row in reversed(rows):
            chunk = await store.chunk(row["chunk"])
            assert chunk is not None
            found.append(Entry.from_bytes(chunk[row["_id"] - row["chunk"]]))
    finally:
        await client.close()
    return found


async def test_records_are_appended_once_in_stream_order(
    stack: RunningStack, audit: audit_pb2_grpc.AuditServiceStub, bus: EventBus
) -> None:
    ins = make_ins()
    events = records(30, ins)
    for event in events:
        await bus.publish_event(event)
    # the same events again: within JetStream's duplicate window (same Nats-Msg-Id)…
    for event in events[:10]:
        await bus.publish_event(event)
    # …and past it (a new message id, as after a long outage): the log's event-id index
    for event in events[10:20]:
        await bus.publish(event.type, event.SerializeToString(), msg_id=f"again-{event.id}")
    found = await entries_of(stack, audit, ins, 30)
    await asyncio.sleep(1.0)  # anything appended twice would be there by now
    found = await entries_of(stack, audit, ins, 30)
    assert [e.event_id for e in found] == [e.id for e in events]
    assert [e.n for e in found] == list(range(30))
    assert all(b.seq > a.seq for a, b in itertools.pairwise(found))


async def test_records_arriving_one_by_one_are_appended_a_few_at_a_time(
    stack: RunningStack, audit: audit_pb2_grpc.AuditServiceStub, bus: EventBus
) -> None:
    """A trickle (a read every 50 ms) is written in a few chunks, not one per entry: after a
    write that was not full, the next fetch waits `append_linger_seconds` (0.2 s)."""
    ins = make_ins()
    events = records(24, ins)
    for event in events:
        await bus.publish_event(event)
        await asyncio.sleep(0.05)
    await entries_of(stack, audit, ins, len(events))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.infra.mongo.url)
    try:
        rows = await AuditStore(client["audit"]).trail_page(ins, 2**62, 10_000)
    finally:
        await client.close()
    chunks = {row["chunk"] for row in rows}
    assert len(rows) == len(events)
    # 1.2 s of arrivals, a write at most every 0.2 s: seven or eight; without the wait one
    # per entry, or one per append's time (12 at 100 ms)
    assert len(chunks) <= 9, len(chunks)


async def test_a_consumer_killed_mid_batch_resumes_with_no_gap(
    stack: RunningStack, audit: audit_pb2_grpc.AuditServiceStub, bus: EventBus
) -> None:
    ins = make_ins()
    events = records(3000, ins)
    before = (await audit.GetCheckpoint(pb.GetCheckpointRequest())).checkpoint.size

    async def publish() -> None:
        for event in events:
            await bus.publish_event(event)

    publishing = asyncio.create_task(publish())
    deadline = time.monotonic() + 60
    while (await audit.GetCheckpoint(pb.GetCheckpointRequest())).checkpoint.size == before:
        assert time.monotonic() < deadline, "nothing was appended"
        await asyncio.sleep(0.05)
    await asyncio.to_thread(stack.stack.restart, "audit")  # SIGKILL, mid-stream
    await publishing
    found = await entries_of(stack, audit, ins, 3000)
    assert [e.event_id for e in found] == [e.id for e in events], "each once, in stream order"
    await stored_log(stack, audit)  # and the whole log still verifies: no gap, no overlap


async def test_a_clean_stop_gives_the_sequencer_lease_up(
    stack: RunningStack, audit: audit_pb2_grpc.AuditServiceStub
) -> None:
    """SIGTERM, as a rolling update sends it: the sequencer gives its lease up as it stops, so
    the next one appends at once rather than after the lease lapses (seconds of no trail)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.infra.mongo.url)
    leases = client["audit"]["lease"]
    try:
        await audit.GetCheckpoint(pb.GetCheckpointRequest())
        pid = stack.processes["audit"]
        deadline = time.monotonic() + 30
        while (held := await leases.find_one({"_id": SEQUENCER})) is None or (
            f":{pid}:" not in held["holder"]
        ):
            assert time.monotonic() < deadline, "the audit process never held the lease"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(stop_pid, pid)  # SIGTERM, then waits for it to end
        after = await leases.find_one({"_id": SEQUENCER})
        assert after is None or after["holder"] != held["holder"], "the lease was kept"
    finally:
        await asyncio.to_thread(stack.stack.restart, "audit", kill=False)
        await client.close()


async def test_proofs_check_against_the_signed_head(
    stack: RunningStack, audit: audit_pb2_grpc.AuditServiceStub, bus: EventBus
) -> None:
    ins = make_ins()
    for event in records(5, ins):
        await bus.publish_event(event)
    found = await entries_of(stack, audit, ins, 5)
    deadline = time.monotonic() + 10
    while True:
        head = (await audit.GetCheckpoint(pb.GetCheckpointRequest())).checkpoint
        if head.size > found[-1].seq or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    root = bytes.fromhex(head.root_hash)
    for entry in found:
        proof = await audit.GetInclusionProof(pb.GetInclusionProofRequest(seq=entry.seq))
        assert proof.tree_size == head.size and proof.leaf_index == entry.seq
        leaf = merkle.leaf_hash(entry.to_bytes())
        assert proof.leaf_hash == leaf.hex()
        path = [bytes.fromhex(h) for h in proof.proof]
        assert merkle.verify_inclusion(entry.seq, head.size, leaf, path, root)
    consistency = await audit.GetConsistencyProof(
        pb.GetConsistencyProofRequest(from_size=found[0].seq + 1, to_size=head.size)
    )
    assert consistency.proof


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GetInclusionProofRequest(seq=-1), "seq"),
        (pb.GetInclusionProofRequest(seq=2**40), "seq"),
        (pb.GetInclusionProofRequest(seq=0, tree_size=2**40), "tree_size"),
    ],
)
async def test_impossible_proofs_are_refused_with_the_field(
    audit: audit_pb2_grpc.AuditServiceStub, request_: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.GetInclusionProof(request_)
    err = error_from_rpc(caught.value)
    assert err.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field == field


async def test_consistency_sizes_are_checked(
    stack: RunningStack, audit: audit_pb2_grpc.AuditServiceStub, bus: EventBus
) -> None:
    # A log of one entry at least, whatever ran before: so size 1 is a valid `to`.
    ins = make_ins()
    (event,) = records(1, ins)
    await bus.publish_event(event)
    assert await entries_of(stack, audit, ins, 1)
    for from_size, to_size, field in ((0, 1, "from"), (5, 2**40, "to")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await audit.GetConsistencyProof(
                pb.GetConsistencyProofRequest(from_size=from_size, to_size=to_size)
            )
        assert error_from_rpc(caught.value).field == field


async def test_the_access_log_needs_a_caller(audit: audit_pb2_grpc.AuditServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.ListAccessLog(pb.ListAccessLogRequest(ins=make_ins()))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_record_its_subject_producer_could_not_have_published_is_left_out(
    stack: RunningStack, audit: audit_pb2_grpc.AuditServiceStub, bus: EventBus
) -> None:
    """Only dossier may publish on `audit.dossier` (the NATS server sees to it): an envelope
    there that names another source, or another type, is not dossier's trace."""
    ins = make_ins()
    other_source, other_type, genuine = records(3, ins)
    other_source.source = "identity"
    other_type.type = "audit.identity"
    await bus.publish_event(other_source)
    await bus.publish("audit.dossier", other_type.SerializeToString(), other_type.id)
    await bus.publish_event(genuine)
    await entries_of(stack, audit, ins, 1)
    await asyncio.sleep(1.0)  # the forged ones would be appended by now
    found = await entries_of(stack, audit, ins, 1)
    assert [e.event_id for e in found] == [genuine.id]
