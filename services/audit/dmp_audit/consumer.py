"""Feeding the log from JetStream; mirroring who reads a dossier's whole trace: the attending
physician from consent's events, the legal representatives and purges from the dossier's, the
end of a minor's representation from identity's.

The log's consumer is durable (`audit-log` on the AUDIT stream) but the log, not the consumer,
is the authority on progress: each (re)start binds it at the stream sequence after the last one
the log holds, so records arrive in stream order with nothing skipped whatever happened before
(a crash between storing a chunk and acknowledging it included). Acknowledgement is cumulative
(AckPolicy.ALL): acking a batch's last message acks the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from dmp.events.v1 import envelope_pb2
from dmp_audit.log import AuditLog, Record
from dmp_audit.store import AuditStore
from dmp_kit import tracing
from dmp_kit.bus import EventBus, Pull, authentic, run_consumer
from dmp_kit.lease import Lease
from dmp_kit.metrics import ConsumerLag

log = structlog.get_logger("dmp.audit")

STREAM = "AUDIT"
SEQUENCER = "audit-sequencer"  # the lease's name
DURABLE = "audit-log"
RETRY_SECONDS = 1.0
CARE_CHANGES = frozenset({"attending_physician", "blocked", "authorized", "removed"})


async def run_sequencer(bus: EventBus, audit: AuditLog, lease: Lease, stop: asyncio.Event) -> None:
    """Every replica runs this. The one holding the lease appends (it reloads the log from
    the database when it takes over); the others follow the log, serving reads from what the
    sequencer stored, and take over when its lease lapses."""
    appending: tuple[asyncio.Task[None], asyncio.Event] | None = None
    try:
        while not stop.is_set():
            try:
                held = await lease.hold()
            except Exception as exc:  # the database unreachable: not the sequencer meanwhile
                log.warning("audit_lease_unreachable", error=type(exc).__name__)
                held = False
            if held and appending is None:
                try:
                    await audit.load()
                except Exception:
                    await lease.release()  # another replica may fare better; this one says why
                    raise
                halt = asyncio.Event()
                appending = (asyncio.create_task(run_log_consumer(bus, audit, halt)), halt)
                log.info("audit_sequencer_acquired", epoch=lease.epoch)
            elif not held and appending is not None:
                log.warning("audit_sequencer_lost")
                await _halt(appending)
                appending = None
            if not held:
                try:
                    await audit.follow()
                except Exception as exc:
                    log.warning("audit_follow_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), lease.margin)
    finally:
        if appending is not None:
            # A clean stop gives the lease up, so that the next sequencer (a rolling update's
            # new replica) appends at once instead of waiting the lease out; the shutdown may
            # cancel this while appending winds down, and the lease is given up even then.
            try:
                await _halt(appending)
            finally:
                with contextlib.suppress(Exception):
                    await lease.release()


async def _halt(appending: tuple[asyncio.Task[None], asyncio.Event]) -> None:
    task, halt = appending
    halt.set()
    try:
        with contextlib.suppress(Exception):
            await task
    except asyncio.CancelledError:
        task.cancel()  # no appending once this sequencer has let go
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
        raise


async def run_log_consumer(bus: EventBus, audit: AuditLog, stop: asyncio.Event) -> None:
    batch = audit.settings.append_batch
    while not stop.is_set():
        try:
            sub = await bind(bus, audit.stream_last + 1, batch, audit.settings.ack_wait_seconds)
        except nats.errors.Error as exc:
            log.warning("audit_consumer_bind_failed", error=type(exc).__name__)
            await asyncio.sleep(RETRY_SECONDS)
            continue
        try:
            await _pump(sub, audit, batch, stop)
        except Exception as exc:
            # Nothing acknowledged past what the log holds: rebind there and carry on.
            log.warning("audit_append_failed", error=type(exc).__name__, detail=str(exc)[:200])
            await asyncio.sleep(RETRY_SECONDS)
        finally:
            await sub.unsubscribe()
    # what follows from the last chunks is stored before this appender says it has stopped
    await audit.settle(quiet=True)


async def _pump(sub: Pull, audit: AuditLog, batch: int, stop: asyncio.Event) -> None:
    # The next batch is fetched while this one is stored: the stream's round trips overlap
    # the database's (max_ack_pending leaves room for two batches in flight).
    pending = asyncio.create_task(_fetch(sub, batch))
    try:
        async with ConsumerLag(STREAM, DURABLE).watching(sub, stop):
            while not stop.is_set():
                msgs = await pending
                # After a batch that was not full, the next fetch waits a little: what arrives
                # meanwhile is appended together, one chunk, trail and tile write for many
                # entries instead of one each. A reader of the trail cuts the wait short.
                linger = audit.settings.append_linger_seconds if 0 < len(msgs) < batch else 0.0
                pending = asyncio.create_task(_fetch(sub, batch, linger, audit.hurry))
                if not msgs:  # nothing new (a fetch may also end empty): sign what is due
                    await audit.tick()
                    continue
                records, traced = [], []
                for msg in msgs:
                    try:
                        event = envelope_pb2.Envelope.FromString(msg.data)
                    except Exception:
                        event = None
                    if event is not None and not authentic(msg.subject, event):
                        # Not its subject's producer's (forged or misrouted): left out of the log
                        # as an undecodable record is.
                        log.error(
                            "event_not_from_its_producer", subject=msg.subject, event_id=event.id
                        )
                        event = None
                    records.append(Record(msg.metadata.sequence.stream, event))
                    traced.append((msg.subject, event, msg.headers))
                with tracing.consuming_batch(DURABLE, traced):
                    # acknowledged once the chunk is stored (the commit point): the tiles,
                    # the trail and the edge follow while the next batch is read
                    await audit.append(records, behind=True)
                    await msgs[-1].ack()
    finally:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pending


async def _fetch(
    sub: Pull,
    batch: int,
    linger: float = 0.0,
    hurry: asyncio.Event | None = None,
) -> list[Msg]:
    if linger and hurry is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), linger)
        hurry.clear()
    return await sub.fetch(batch, wait=1.0)


async def bind(bus: EventBus, start: int, batch: int, ack_wait: float) -> Pull:
    """(Re)create the durable consumer at stream sequence `start` and bind a pull to it."""
    with contextlib.suppress(NotFoundError):
        await bus.js.delete_consumer(STREAM, DURABLE)
    config = ConsumerConfig(
        # Named: the create request then names its filter, the one the server allows audit.
        name=DURABLE,
        durable_name=DURABLE,
        ack_policy=AckPolicy.ALL,
        ack_wait=ack_wait,
        max_ack_pending=batch * 4,
        filter_subject="audit.>",
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
        opt_start_seq=start if start > 1 else None,
    )
    await bus.js.add_consumer(STREAM, config)
    return await bus.pull(STREAM, DURABLE)


async def run_attending_mirror(bus: EventBus, store: AuditStore, stop: asyncio.Event) -> None:
    """Who each dossier's attending physician is, from consent's `consent.changed` events:
    the physician reads the whole trace (rule 10)."""

    async def handle(event: envelope_pb2.Envelope) -> None:
        change = event.consent_changed
        if event.WhichOneof("payload") == "consent_changed" and change.change in CARE_CHANGES:
            await store.note_care_change(
                event.patient_ins, change.change, change.rpps, _order(event)
            )

    await run_consumer(
        bus,
        stream="CONSENT",
        durable="audit-attending-physician",
        subject="consent.changed",
        handler=handle,
        stop=stop,
    )


DOSSIER_OPEN = {
    "dossier_opened": True,
    "dossier_reopened": True,
    "dossier_closed": False,
    "deletion_requested": False,
}


async def on_dossier_event(store: AuditStore, event: envelope_pb2.Envelope) -> None:
    """Idempotent and order-safe: each write keeps the newest event's word."""
    kind = event.WhichOneof("payload")
    if not event.patient_ins:
        return
    if kind == "dossier_purged":
        await store.forget_dossier(event.patient_ins, _order(event))
    elif kind in DOSSIER_OPEN:
        representatives = (
            list(event.dossier_opened.legal_representatives) if kind == "dossier_opened" else None
        )
        await store.note_dossier(
            event.patient_ins, DOSSIER_OPEN[kind], representatives, _order(event)
        )


async def run_dossier_mirror(bus: EventBus, store: AuditStore, stop: asyncio.Event) -> None:
    """The dossier's lifecycle: legal representatives read the trace as the patient does
    (rule 10), and a purge takes away every such right (rule 13)."""

    async def handle(event: envelope_pb2.Envelope) -> None:
        await on_dossier_event(store, event)

    await run_consumer(
        bus,
        stream="DOSSIER",
        durable="audit-dossier-lifecycle",
        subject="dossier.>",
        handler=handle,
        stop=stop,
    )


async def on_representation_ended(store: AuditStore, event: envelope_pb2.Envelope) -> None:
    """identity.representation.ended: the former representatives no longer read the trace."""
    if event.WhichOneof("payload") != "representation_ended" or not event.patient_ins:
        return
    former = list(event.representation_ended.legal_representatives)
    await store.drop_representatives(event.patient_ins, former)


async def run_representation_mirror(bus: EventBus, store: AuditStore, stop: asyncio.Event) -> None:
    """A minor's majority, from identity: their legal representatives read no more of it."""

    await run_consumer(
        bus,
        stream="IDENTITY",
        durable="audit-representation-ended",
        subject="identity.representation.ended",
        handler=partial(on_representation_ended, store),
        stop=stop,
    )


def _order(event: envelope_pb2.Envelope) -> int:
    """Events' UUIDv7 ids sort by time; their occurred_at in microseconds orders them."""
    return event.occurred_at.seconds * 1_000_000 + event.occurred_at.nanos // 1000
