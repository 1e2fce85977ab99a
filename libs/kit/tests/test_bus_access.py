"""Who may do what on the bus, against a real nats-server configured as every deployment is:
each service its own user and subjects, nothing without credentials, forged events dropped."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from dmp.events.v1 import consent_pb2, envelope_pb2
from dmp_kit.bus import (
    BUS_ACCESS,
    STREAMS,
    EventBus,
    _matches,
    inbox_prefix,
    producer_of,
    run_consumer,
)
from dmp_kit.clock import ManualClock
from dmp_kit.events import new_event
from dmp_stack.credentials import SERVICES
from dmp_stack.testing import OwnNats, own_nats

CLOCK = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
# One subject of each producer's, and what a forger would most like to write.
SUBJECTS = (
    "identity.login",
    "audit.identity",
    "dossier.opened",
    "document.added",
    "access.first",
    "audit.dossier",
    "consent.changed",
    "audit.consent",
)

STREAM_SAMPLES = {
    "IDENTITY": "identity.login",
    "DOSSIER": "dossier.opened",
    "CONSENT": "consent.changed",
    "AUDIT": "audit.dossier",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnNats]:
    """A server of this module's own: its durable consumers are the services' names."""
    with own_nats(tmp_path_factory.mktemp("nats")) as started:
        yield started


@pytest.fixture
async def streams(server: OwnNats) -> AsyncIterator[EventBus]:
    """The tests' own user, allowed everything: it creates the streams, and forges."""
    bus = EventBus(server.url, "kit-bus-access")
    await bus.connect()
    await bus.ensure_streams()
    yield bus
    await bus.close()


async def connect_as(server: OwnNats, service: str, errors: list[str]) -> Client:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        server.service_url,
        user=service,
        password=server.credentials.nats_passwords[service],
        inbox_prefix=inbox_prefix(service),
        error_cb=on_error,
        allow_reconnect=False,
    )


async def refused(errors: list[str], subject: str, times: int = 1) -> bool:
    """Did the server refuse a publish to `subject` (at least `times` publishes)?"""
    for _ in range(50):
        if (
            sum(
                "permissions violation" in e.lower() and subject.lower() in e.lower()
                for e in errors
            )
            >= times
        ):
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_publishes_its_own_subjects_only(
    server: OwnNats, streams: EventBus, service: str
) -> None:
    errors: list[str] = []
    nc = await connect_as(server, service, errors)
    js = nc.jetstream(timeout=2)
    try:
        for subject in SUBJECTS:
            if producer_of(subject) == service:
                ack = await js.publish(
                    subject, b"own", headers={"Nats-Msg-Id": secrets.token_hex(8)}
                )
                assert ack.seq > 0
            else:
                await nc.publish(subject, b"forged")
                await nc.flush()
                assert await refused(errors, subject), f"{service} published on {subject}"
    finally:
        await nc.close()


async def test_a_service_reads_neither_subjects_nor_durables_of_others(
    server: OwnNats, streams: EventBus
) -> None:
    errors: list[str] = []
    nc = await connect_as(server, "notify", errors)
    try:
        await nc.subscribe("consent.changed")
        await nc.flush()
        assert await refused(errors, "consent.changed")
        # consent's durable consumer: pulling from it would steal consent's dossier events.
        steal = "$JS.API.CONSUMER.MSG.NEXT.DOSSIER.consent-dossier-lifecycle"
        await nc.publish(steal, b"1", reply=f"{inbox_prefix('notify')}.x")
        await nc.flush()
        assert await refused(errors, steal), errors
        # Another service's replies.
        await nc.subscribe(f"{inbox_prefix('dossier')}.>")
        await nc.flush()
        assert await refused(errors, inbox_prefix("dossier"))
    finally:
        await nc.close()


async def test_each_service_runs_on_its_permissions(server: OwnNats, streams: EventBus) -> None:
    """Connect, health, streams it owns, its durable consumers: all that a service does."""
    filters = {f for access in BUS_ACCESS.values() for _, _, f in access.consumes}
    for subject in {*STREAM_SAMPLES.values(), *(f.replace(">", "sample") for f in filters)}:
        event = changed(subject, producer_of(subject) or "")
        await streams.publish(subject, event.SerializeToString(), event.id)
    for service in SERVICES:
        bus = EventBus(
            server.service_url,
            f"dmp-{service}",
            user=service,
            password=server.credentials.nats_passwords[service],
        )
        await bus.connect()
        try:
            assert await bus.healthy()
            await bus.ensure_streams(BUS_ACCESS[service].owns_streams)
            for stream, durable, filter_subject in BUS_ACCESS[service].consumes:
                with contextlib.suppress(NotFoundError):  # created anew, as at a first start
                    await streams.js.delete_consumer(stream, durable)
                sub = await bus.js.pull_subscribe(filter_subject, durable=durable, stream=stream)
                info = await bus.js.consumer_info(stream, durable)
                assert info.config.filter_subject == filter_subject
                msgs = await sub.fetch(1, timeout=5)
                assert _matches(filter_subject, msgs[0].subject), (durable, msgs[0].subject)
                await msgs[0].ack_sync()  # the server confirms: the ack was allowed
                await sub.unsubscribe()
        finally:
            await bus.close()


@pytest.mark.parametrize("service", [s for s in SERVICES if BUS_ACCESS[s].consumes])
async def test_a_service_creates_its_durables_with_their_declared_filter_only(
    server: OwnNats, streams: EventBus, service: str
) -> None:
    """Another filter (wider, or another part of the stream), none at all, or the legacy
    request that names no filter: each would let the service read events it has no use for.
    The create subject says nothing of a push consumer's deliver subject, but with the declared
    filter it carries nothing more, and only to the service's own inbox (all it may read)."""
    errors: list[str] = []
    nc = await connect_as(server, service, errors)
    js = nc.jetstream(timeout=0.5)

    async def unanswered(stream: str, config: ConsumerConfig) -> None:
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer(stream, config)

    try:
        for stream, durable, filter_subject in BUS_ACCESS[service].consumes:
            # Pull, or push to the service's own inbox, with any other filter: refused alike.
            # Every attempt at once (each waits out its timeout), then one refusal each: they
            # all publish to the same subject, so the refusals are counted.
            attempts = [
                ConsumerConfig(
                    name=durable,
                    durable_name=durable,
                    filter_subject=other,
                    deliver_subject=deliver,
                )
                for other in [*STREAMS[stream], ">"]
                if other != filter_subject
                for deliver in (None, f"{inbox_prefix(service)}.push")
            ]
            await asyncio.gather(*(unanswered(stream, config) for config in attempts))
            create = f"$JS.API.CONSUMER.CREATE.{stream}.{durable}"
            assert await refused(errors, create, times=len(attempts)), (durable, errors)
            errors.clear()
            legacy = ConsumerConfig(durable_name=durable, filter_subject=filter_subject)
            with pytest.raises(nats.errors.TimeoutError):
                await js.add_consumer(stream, legacy)
            assert await refused(errors, f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}")
            errors.clear()
            with contextlib.suppress(NotFoundError):
                await streams.js.delete_consumer(stream, durable)
            own = ConsumerConfig(name=durable, durable_name=durable, filter_subject=filter_subject)
            created = await js.add_consumer(stream, own)
            assert created.config.filter_subject == filter_subject
    finally:
        await nc.close()


@pytest.mark.parametrize(
    "credentials", [None, ("dossier", "not its password"), ("nobody", "whatever")]
)
async def test_nothing_connects_without_credentials(
    server: OwnNats, credentials: tuple[str, str] | None
) -> None:
    user, password = credentials or (None, None)
    with pytest.raises((nats.errors.Error, OSError), match=r"(?i)authorization"):
        await nats.connect(
            server.service_url,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
            user=user,
            password=password,
        )


def changed(subject_type: str, source: str) -> envelope_pb2.Envelope:
    return new_event(
        subject_type,
        consent_pb2.ConsentChanged(change="attending_physician", rpps="10000000009"),
        source=source,
        clock=CLOCK,
        patient_ins="184057512345616",
    )


async def test_a_consumer_drops_an_event_its_producer_could_not_have_published(
    streams: EventBus,
) -> None:
    """A `consent.changed` naming a GP, published where consent never publishes it, or
    claiming another source, is acknowledged and never handled; the genuine one is."""
    on_wrong_subject = changed("consent.changed", "consent")
    from_wrong_source = changed("consent.changed", "dossier")
    genuine = changed("consent.changed", "consent")
    await streams.publish(
        "consent.break_glass", on_wrong_subject.SerializeToString(), on_wrong_subject.id
    )
    await streams.publish(
        "consent.changed", from_wrong_source.SerializeToString(), from_wrong_source.id
    )
    await streams.publish_event(genuine)

    seen: list[str] = []
    stop = asyncio.Event()

    async def handler(event: envelope_pb2.Envelope) -> None:
        seen.append(event.id)
        if event.id == genuine.id:
            stop.set()

    durable = f"forged_{secrets.token_hex(4)}"
    task = asyncio.create_task(
        run_consumer(
            streams,
            stream="CONSENT",
            durable=durable,
            subject="consent.>",
            handler=handler,
            stop=stop,
        )
    )
    try:
        await asyncio.wait_for(stop.wait(), timeout=20)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await task
    assert on_wrong_subject.id not in seen and from_wrong_source.id not in seen
    assert genuine.id in seen
    info = await streams.js.consumer_info("CONSENT", durable)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


def test_every_subject_has_one_producer() -> None:
    for service, access in BUS_ACCESS.items():
        for pattern in access.publishes:
            sample = pattern.replace(">", "x").replace("*", "x")
            assert producer_of(sample) == service
    assert producer_of("nobody.publishes.this") is None


def test_every_durable_consumer_of_the_services_is_declared() -> None:
    """A consumer missing from BUS_ACCESS would be refused by the server: found here first."""
    services = Path(__file__).resolve().parents[3] / "services"
    found: set[tuple[str, str, str, str]] = set()
    for path in services.glob("*/dmp_*/*.py"):
        service = path.parent.name.removeprefix("dmp_")
        text = path.read_text()
        calls = re.findall(r'stream="([A-Z]+)",\s*durable="([\w-]+)",\s*subject="([\w.>*]+)"', text)
        tables = re.findall(r'\("([A-Z]+)", "([\w-]+)", "([\w.>*]+)"\)', text)
        found |= {(service, *consumer) for consumer in calls + tables}
    assert len(found) >= 8, found  # the scan still sees them
    for service, *consumer in found:
        assert tuple(consumer) in BUS_ACCESS[service].consumes, (service, consumer)
