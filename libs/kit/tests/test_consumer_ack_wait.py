"""How long a durable consumer holds an event: a dead one's come back within the ack wait, a
live slow one keeps its own, and a consumer made with other settings is brought to these.
Against a real NATS server."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo

from dmp.events.v1 import envelope_pb2
from dmp_kit.bus import ACK_WAIT_SECONDS, EventBus, Handler, run_consumer
from dmp_stack.testing import Infra

from .test_outbox_and_bus import login_event

SUBJECT = "identity.login"


@pytest.fixture
async def bus(infra: Infra) -> AsyncIterator[EventBus]:
    bus = EventBus(infra.nats.url, "kit-test")
    await bus.connect()
    await bus.ensure_streams()
    yield bus
    await bus.close()


async def consume(
    bus: EventBus,
    durable: str,
    handler: Handler,
    stop: asyncio.Event,
    ack_wait: float,
) -> None:
    await run_consumer(
        bus,
        stream="IDENTITY",
        durable=durable,
        subject=SUBJECT,
        handler=handler,
        stop=stop,
        ack_wait=ack_wait,
    )


async def settled(bus: EventBus, durable: str) -> ConsumerInfo:
    """The consumer's state once the acknowledgements sent have been applied (the server
    takes them in apart from the API requests)."""
    for _ in range(50):
        info = await bus.js.consumer_info("IDENTITY", durable)
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.1)
    return info


async def test_events_a_dead_consumer_held_come_back_within_the_ack_wait(
    infra: Infra, bus: EventBus
) -> None:
    ack_wait = 1.5
    durable = f"dead_{secrets.token_hex(4)}"
    event = login_event("held by a consumer that dies")
    await bus.publish_event(event)

    # The first process takes the event and dies before acknowledging it: its connection
    # goes, its task with it (no acknowledgement, no "still working" any more).
    doomed = EventBus(infra.nats.url, "kit-test-doomed")
    await doomed.connect()
    taken = asyncio.Event()

    async def hangs(e: envelope_pb2.Envelope) -> None:
        if e.id == event.id:
            taken.set()
            await asyncio.Event().wait()

    first = asyncio.create_task(consume(doomed, durable, hangs, asyncio.Event(), ack_wait))
    await asyncio.wait_for(taken.wait(), timeout=20)
    assert doomed._nc is not None
    await doomed._nc.close()
    died = time.monotonic()
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)

    # Its successor gets the event again, within the ack wait (and one fetch's timeout).
    again: list[float] = []
    stop = asyncio.Event()

    async def records(e: envelope_pb2.Envelope) -> None:
        if e.id == event.id:
            again.append(time.monotonic() - died)
            stop.set()

    second = asyncio.create_task(consume(bus, durable, records, stop, ack_wait))
    try:
        await asyncio.wait_for(stop.wait(), timeout=20)
    finally:
        stop.set()
        await second
    assert len(again) == 1
    assert again[0] <= ack_wait + 1.5, again


async def test_a_live_consumer_slower_than_the_ack_wait_keeps_its_events(
    infra: Infra, bus: EventBus
) -> None:
    """Two replicas share the durable: the idle one would be handed what the slow one holds
    once the ack wait passed, had the slow one not said it was still working on it."""
    ack_wait = 1.0
    durable = f"slow_{secrets.token_hex(4)}"
    events = [login_event(f"slow {i}") for i in range(3)]
    for event in events:
        await bus.publish_event(event)
    ours = {e.id for e in events}
    calls: list[str] = []
    stop, done = asyncio.Event(), asyncio.Event()

    async def slow(e: envelope_pb2.Envelope) -> None:
        if e.id not in ours:
            return
        calls.append(e.id)
        await asyncio.sleep(2.5 * ack_wait)  # each effect outlasts the ack wait
        if len(calls) >= len(events):
            done.set()

    other = EventBus(infra.nats.url, "kit-test-replica")
    await other.connect()
    first = asyncio.create_task(consume(bus, durable, slow, stop, ack_wait))
    await asyncio.sleep(0.5)  # the first replica takes the batch
    second = asyncio.create_task(consume(other, durable, slow, stop, ack_wait))
    try:
        await asyncio.wait_for(done.wait(), timeout=30)
        await asyncio.sleep(2 * ack_wait)  # a redelivery, had there been one, would come now
    finally:
        stop.set()
        await asyncio.gather(first, second)
        await other.close()
    # Held through 7.5 ack waits by the batch's "still working": each handled once.
    assert sorted(calls) == sorted(ours), calls
    info = await settled(bus, durable)
    assert info.num_redelivered == 0 and info.num_ack_pending == 0


async def test_a_consumer_made_with_other_settings_is_brought_to_these(bus: EventBus) -> None:
    durable = f"old_{secrets.token_hex(4)}"
    # As an earlier version made it: thirty seconds' wait.
    await bus.js.add_consumer(
        "IDENTITY",
        ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=SUBJECT,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
        ),
    )
    event = login_event("after the update")
    await bus.publish_event(event)
    stop = asyncio.Event()
    seen: list[str] = []

    async def handler(e: envelope_pb2.Envelope) -> None:
        seen.append(e.id)
        if e.id == event.id:
            stop.set()

    task = asyncio.create_task(
        run_consumer(
            bus, stream="IDENTITY", durable=durable, subject=SUBJECT, handler=handler, stop=stop
        )
    )
    try:
        await asyncio.wait_for(stop.wait(), timeout=20)
    finally:
        stop.set()
        await task
    info = await settled(bus, durable)
    assert info.config.ack_wait == ACK_WAIT_SECONDS
    assert event.id in seen and info.num_ack_pending == 0
