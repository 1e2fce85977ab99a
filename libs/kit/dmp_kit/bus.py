"""NATS JetStream: streams, publish with Nats-Msg-Id, durable consumers that ack after effect.

Who may do what on the bus is data here, once: each service's subjects and durable consumers.
The NATS server enforces it (dmp_stack.natsauth turns it into each service's permissions), and
every consumer drops an event whose type its producer could not have published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DEFAULT_PREFIX as JS_API_PREFIX
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError

from dmp.events.v1 import envelope_pb2
from dmp_kit import tracing
from dmp_kit.errors import Unavailable
from dmp_kit.logging import get_logger
from dmp_kit.metrics import DEAD_LETTERS, EVENTS_HANDLED, ConsumerLag
from dmp_kit.periodic import beside

log = get_logger(__name__)

# Every stream of the platform, by subjects.
STREAMS: dict[str, list[str]] = {
    "IDENTITY": ["identity.>"],
    "DOSSIER": ["dossier.>", "document.>", "access.>"],
    "CONSENT": ["consent.>"],
    "AUDIT": ["audit.>"],
    "MESSAGING": ["message.>"],
    "AGENDA": ["agenda.>"],
}
DUPLICATE_WINDOW_SECONDS = 600.0
# How long JetStream waits for a consumer's acknowledgement before delivering the event again
# (to another replica, or to the same process restarted): what a consumer killed mid-batch
# costs in delay. A live consumer slower than this keeps its events by telling the server it
# is still working on them, every third of it (`Msg.in_progress`).
ACK_WAIT_SECONDS = 6.0
# A batch is kept from other replicas that long at most (a handler that hangs lets it go).
HOLD_SECONDS = 60.0
# Batches a concurrent consumer handles at once (run_consumer).
BATCHES_AT_ONCE = 2


@dataclass(frozen=True)
class BusAccess:
    """What one service does on the bus: the subjects it publishes, the streams it creates
    (at start, idempotent; a consumer of a stream not there yet retries until its owner has
    started), and its durable consumers as (stream, durable name, filter subject): the server
    lets it create each durable with that filter only."""

    publishes: tuple[str, ...] = ()
    owns_streams: tuple[str, ...] = ()
    consumes: tuple[tuple[str, str, str], ...] = field(default=())


# Each service's traces are `audit.<service>` (dmp_kit.events.audit_event).
BUS_ACCESS: dict[str, BusAccess] = {
    "identity": BusAccess(publishes=("identity.>", "audit.identity"), owns_streams=("IDENTITY",)),
    "dossier": BusAccess(
        publishes=("dossier.>", "document.>", "access.>", "audit.dossier"),
        owns_streams=("DOSSIER",),
        consumes=(("IDENTITY", "dossier-representation-ended", "identity.representation.ended"),),
    ),
    "consent": BusAccess(
        publishes=("consent.>", "audit.consent"),
        owns_streams=("CONSENT",),
        consumes=(
            ("DOSSIER", "consent-dossier-lifecycle", "dossier.>"),
            ("IDENTITY", "consent-representation-ended", "identity.representation.ended"),
        ),
    ),
    "audit": BusAccess(
        owns_streams=("AUDIT",),
        consumes=(
            ("AUDIT", "audit-log", "audit.>"),
            ("CONSENT", "audit-attending-physician", "consent.changed"),
            ("DOSSIER", "audit-dossier-lifecycle", "dossier.>"),
            ("IDENTITY", "audit-representation-ended", "identity.representation.ended"),
        ),
    ),
    "notify": BusAccess(
        consumes=(
            ("DOSSIER", "notify-document-added", "document.added"),
            ("DOSSIER", "notify-reminder", "document.reminder_due"),
            ("DOSSIER", "notify-access-first", "access.first"),
            ("CONSENT", "notify-emergency-access", "consent.>"),
            ("IDENTITY", "notify-login", "identity.login"),
            ("DOSSIER", "notify-dossier-purged", "dossier.purged"),
            ("MESSAGING", "notify-message", "message.sent"),
            ("IDENTITY", "notify-representation", "identity.representation.>"),
            ("AGENDA", "notify-prevention-reminder", "agenda.reminder.due"),
        ),
    ),
    "ingest": BusAccess(consumes=(("DOSSIER", "ingest-dossier-lifecycle", "dossier.>"),)),
    "messaging": BusAccess(
        publishes=("message.>", "audit.messaging"),
        owns_streams=("MESSAGING",),
        consumes=(("DOSSIER", "messaging-dossier-purged", "dossier.purged"),),
    ),
    "agenda": BusAccess(
        publishes=("agenda.>", "audit.agenda"),
        owns_streams=("AGENDA",),
        consumes=(
            ("DOSSIER", "agenda-dossier-lifecycle", "dossier.>"),
            ("DOSSIER", "agenda-document-added", "document.added"),
        ),
    ),
}


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more trailing tokens."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or part not in ("*", have[i]):
            return False
    return len(want) == len(have)


@lru_cache(maxsize=1024)  # every consumed event asks; the subjects in use are few
def producer_of(subject: str) -> str | None:
    """The one service allowed to publish on `subject`, if any."""
    for service, access in BUS_ACCESS.items():
        if any(_matches(pattern, subject) for pattern in access.publishes):
            return service
    return None


def authentic(subject: str, event: envelope_pb2.Envelope) -> bool:
    """An event is its producer's: its type is the subject it came on, and that subject's
    producer is the service the envelope names. The server lets each service publish on its
    own subjects only, so an event that says otherwise was forged or misrouted."""
    producer = producer_of(subject)
    return producer is not None and event.type == subject and event.source == producer


def inbox_prefix(name: str) -> str:
    """Replies to a connection named `name` come under this prefix, which only it may read."""
    return f"_INBOX_{name}"


Handler = Callable[[envelope_pb2.Envelope], Awaitable[None]]
GiveUp = Callable[[envelope_pb2.Envelope, int, Exception], Awaitable[None]]


class EventBus:
    """One NATS connection per process, with its JetStream context."""

    def __init__(
        self,
        url: str,
        name: str,
        publish_timeout: float = 5.0,
        stream_replicas: int = 1,
        stream_max_age_days: float = 0.0,
        *,
        user: str = "",
        password: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._url = url
        self._name = name
        self._timeout = publish_timeout
        self._replicas = stream_replicas
        self._max_age = stream_max_age_days * 86400.0
        self._user = user
        self._password = password
        self._tls = tls
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    async def connect(self) -> None:
        self._nc = await nats.connect(
            # one server, or a cluster's (comma-separated): the client moves between them
            [url.strip() for url in self._url.split(",")],
            name=self._name,
            # Its own inbox prefix: the server lets each service read its own replies only.
            inbox_prefix=inbox_prefix(self._user) if self._user else b"_INBOX",
            tls=self._tls,
            error_cb=self._on_error,
            user=self._user or None,
            password=self._password or None,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            allow_reconnect=True,
            # Notice a silent server within ~30 s even without traffic.
            ping_interval=10,
            max_outstanding_pings=3,
        )
        self._js = self._nc.jetstream(timeout=self._timeout)

    async def _on_error(self, exc: Exception) -> None:
        # A refused subject (permissions violation) lands here, not in the caller.
        log.warning("nats_error", error=type(exc).__name__, detail=str(exc)[:200])

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise Unavailable("the event bus is not connected")
        return self._js

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def healthy(self, wait: float = 1.0) -> bool:
        """JetStream answers an API request: a connected but unresponsive server is not healthy.

        (Not `flush(timeout)`: in nats-py a timed-out flush leaves a cancelled PONG future
        behind, and the late PONG then breaks the client's read loop.)
        """
        if self._nc is None or not self._nc.is_connected:
            return False
        try:
            await self._nc.request("$JS.API.INFO", b"", timeout=wait)
        except (TimeoutError, NatsTimeoutError, nats.errors.Error):
            return False
        return True

    async def ensure_streams(self, names: Iterable[str] | None = None) -> None:
        """Create or update these streams (all of them by default)."""
        for name in STREAMS if names is None else names:
            config = StreamConfig(
                name=name,
                subjects=STREAMS[name],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
                # 3 in production (a JetStream cluster): a stream survives losing a server.
                num_replicas=self._replicas,
                # Events older than this are dropped (0: kept for ever). Every consumer keeps
                # its own position, so only a consumer stopped longer than this loses any.
                max_age=self._max_age or None,
            )
            try:
                await self.js.stream_info(name)
            except NotFoundError:
                await self.js.add_stream(config)
            else:
                await self.js.update_stream(config)

    async def publish(self, subject: str, data: bytes, msg_id: str) -> int:
        """Publish and wait for JetStream's durable acknowledgement; returns the stream sequence."""
        try:
            with tracing.publishing(subject, data) as trace_headers:
                ack = await self.js.publish(
                    subject,
                    data,
                    timeout=self._timeout,
                    headers={"Nats-Msg-Id": msg_id, **trace_headers},
                )
        except (TimeoutError, NatsTimeoutError, nats.errors.Error) as exc:
            raise Unavailable("the event stream did not acknowledge") from exc
        return int(ack.seq)

    async def publish_event(self, event: envelope_pb2.Envelope) -> int:
        return await self.publish(event.type, event.SerializeToString(), event.id)

    async def pull(self, stream: str, durable: str) -> Pull:
        """Pull requests to an existing durable consumer (see `Pull`)."""
        if self._nc is None:
            raise Unavailable("the event bus is not connected")
        pull = Pull(self._nc, self.js, stream, durable)
        await pull.start()
        return pull

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
        self._nc = None
        self._js = None


# A pull request's end, as JetStream says it (a status message to the request's reply subject):
# no more messages for now (404), its time is up or requests already waiting will take what
# there is (408), refused or cut short (409: the consumer's leader changed, too many waiting
# requests, the consumer deleted); 100 is a heartbeat, not an end.
NO_MESSAGES, REQUEST_TIMEOUT, CONFLICT, HEARTBEAT = "404", "408", "409", "100"
LEADER_CHANGED = "Leadership Change"
# How long past a request's expiry its end is waited for before it is taken as lost (the
# connection dropped meanwhile): by then JetStream has let it go too.
PULL_GRACE_SECONDS = 0.5
# A request that ends with nothing well before its time (408 "Requests Pending", a leader
# changing): the pause before the consumer asks again, so that it does not ask in a loop.
PULL_EARLY_END_PAUSE_SECONDS = 0.1


@dataclass
class _Asked:
    reply: str
    batch: int
    until: float  # its expiry and the grace, on the event loop's clock
    received: int = 0


class Pull:
    """A durable consumer's messages, asked for by pull requests of its own making.

    nats-py's `PullSubscription.fetch` sends every request to one reply subject, so a status
    ending an earlier request (a 408 arriving just after the client stopped waiting for it)
    reads as the end of the next one, which then sends a second, lingering request and
    leaves the first open. JetStream gives each new message to the oldest open request, and
    the fetch that receives it waits for its own request's end: an event waited until the
    next one came, or a second (nats-io/nats.py#986; here notifications were 150–230 ms late
    at idle, a few in each run).

    Here each request has a reply subject of its own (`<inbox>.<n>`, one wildcard
    subscription) and asks for the messages available now or, if none, for the first to
    come within its time (`no_wait` with `expires`): JetStream sends them, then ends the
    request with a status, or with the last of its batch. A request is asked only once the
    one before has ended — by its status, its batch filled, or its expiry passed — so every
    message belongs to the one request open, and a status naming another (an earlier
    request's, late) is ignored. A fetch returns when its request ends.
    """

    def __init__(self, nc: NatsClient, js: JetStreamContext, stream: str, durable: str) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._durable = durable
        self._next = f"{JS_API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._count = 0
        self._open: _Asked | None = None
        self._sub: Any = None

    @property
    def inbox(self) -> str:
        """The prefix of this consumer's reply subjects (`<inbox>.<n>`, n its n-th request)."""
        return self._inbox

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*")

    def _status(self, msg: Msg) -> str | None:
        """A status, for a message sent to one of this consumer's reply subjects (a stream's
        message keeps its own subject, whatever headers its publisher gave it)."""
        if not msg.subject.startswith(f"{self._inbox}."):
            return None
        return JetStreamContext.is_status_msg(msg) or None

    async def fetch(self, batch: int, wait: float = 1.0) -> list[Msg]:
        """Up to `batch` messages: those available, else the first to come within `wait`
        seconds (with whatever comes along with it); none if nothing came. A request refused
        (409, other than a leader changing) that brought nothing raises its APIError."""
        loop = asyncio.get_running_loop()
        if self._open is None or loop.time() > self._open.until:
            self._count += 1
            reply = f"{self._inbox}.{self._count}"
            asked = {"batch": batch, "expires": int(wait * 1e9), "no_wait": True}
            await self._nc.publish(self._next, json.dumps(asked).encode(), reply=reply)
            self._open = _Asked(reply, batch, loop.time() + wait + PULL_GRACE_SECONDS)
        request = self._open
        early = loop.time() + wait / 2
        msgs: list[Msg] = []
        while len(msgs) < batch:
            try:
                msg = await self._sub.next_msg(timeout=max(0.001, request.until - loop.time()))
            except (TimeoutError, NatsTimeoutError):
                self._open = None  # no end came (the connection lost, say): it is over
                break
            status = self._status(msg)
            if status is None:
                msgs.append(msg)
                request.received += 1
                if request.received >= request.batch:
                    self._open = None  # its batch filled: JetStream ends it without a status
                    break
                continue
            if msg.subject != request.reply or status == HEARTBEAT:
                continue  # an earlier request's end, come late; or a heartbeat
            self._open = None
            if msgs:
                break
            refused = status not in (NO_MESSAGES, REQUEST_TIMEOUT, CONFLICT) or (
                status == CONFLICT and (msg.headers or {}).get("Description") != LEADER_CHANGED
            )
            if refused:
                raise APIError.from_msg(msg)
            if loop.time() < early:
                await asyncio.sleep(PULL_EARLY_END_PAUSE_SECONDS)
            break
        return msgs

    async def consumer_info(self) -> ConsumerInfo:
        info: ConsumerInfo = await self._js.consumer_info(self._stream, self._durable)
        return info

    async def unsubscribe(self) -> None:
        """Ends the subscription; what it received and nobody took goes back at once."""
        if self._sub is None:
            return
        with contextlib.suppress(nats.errors.Error):
            while self._sub.pending_msgs:
                msg = await self._sub.next_msg(timeout=None)
                if self._status(msg) is None:
                    await msg.nak()
            await self._sub.unsubscribe()


def redelivery_delay(num_delivered: int) -> float:
    """Backoff for a failed effect: 0.5 s, 1 s, 2 s … capped at one minute."""
    return float(min(60.0, 0.5 * 2 ** max(0, num_delivered - 1)))


@contextlib.asynccontextmanager
async def working_on(
    msgs: list[Msg], every: float = ACK_WAIT_SECONDS / 3, at_most: float = HOLD_SECONDS
) -> AsyncIterator[None]:
    """While the block runs, tell JetStream every `every` seconds that the batch's events not
    yet acknowledged are still being worked on, so that a slow effect (a database pausing, a
    long batch) is not delivered a second time while this process lives; once it dies, they
    are delivered again within the ack wait. Not beyond `at_most` seconds: events held by a
    handler that hangs go to another replica (or back to this one) as they did before."""

    async def beat() -> None:
        for _ in range(int(at_most / every)):
            await asyncio.sleep(every)
            for msg in msgs:
                if not msg.is_acked:
                    # the connection down: the events come back after the ack wait, handled
                    # again by idempotent effects
                    with contextlib.suppress(nats.errors.Error):
                        await msg.in_progress()
        log.warning("consumer_batch_held_too_long", held_seconds=at_most, events=len(msgs))

    async with beside(beat()):
        yield


async def run_consumer(
    bus: EventBus,
    *,
    stream: str,
    durable: str,
    subject: str,
    handler: Handler,
    stop: asyncio.Event,
    batch: int = 32,
    max_deliver: int = 20,
    on_give_up: GiveUp | None = None,
    concurrent: bool = False,
    ack_wait: float = ACK_WAIT_SECONDS,
) -> None:
    """A durable pull consumer: the handler stores its effect (keyed by event id), then we ack.

    A failing effect is redelivered later with backoff; after `max_deliver` attempts the event
    is handed to `on_give_up` (a dead-letter record, say) and terminated — never dropped
    silently. A message that cannot be decoded is terminated (logged): no retry can fix it.
    `concurrent` handles each fetched batch at once, for effects that do not depend on order,
    and fetches the next while the last one ends (BATCHES_AT_ONCE at most).
    Events fetched by a consumer that dies are delivered again after `ack_wait` seconds.
    """
    # Created, or brought to these settings if it exists (a consumer made by an earlier
    # version keeps its position and pending events): the one create subject that names the
    # filter, the one each service's NATS user may publish to (dmp_stack.credentials).
    try:
        await bus.js.add_consumer(
            stream,
            ConsumerConfig(
                name=durable,
                durable_name=durable,
                filter_subject=subject,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_deliver=max_deliver,
                ack_wait=ack_wait,
            ),
        )
    except BadRequestError as exc:
        # An existing consumer the server will not change (a setting that cannot be edited):
        # consume with it as it is rather than not at all, and say so.
        log.error(
            "consumer_settings_refused",
            durable=durable,
            err_code=exc.err_code,
            description=exc.description,
        )
    sub = await bus.pull(stream, durable)

    async def handle(msg: Msg) -> None:
        try:
            event = envelope_pb2.Envelope.FromString(msg.data)
        except Exception:
            log.error("event_undecodable", durable=durable, subject=msg.subject)
            EVENTS_HANDLED.labels(durable, "rejected").inc()
            await msg.term()
            return
        if not authentic(msg.subject, event):
            # Acknowledged, never handled: no redelivery can make it its producer's.
            log.error(
                "event_not_from_its_producer",
                durable=durable,
                subject=msg.subject,
                event_type=event.type,
                source=event.source,
                event_id=event.id,
            )
            EVENTS_HANDLED.labels(durable, "rejected").inc()
            await msg.ack()
            return
        with tracing.consuming(durable, msg.subject, event, msg.headers):
            await take_effect(msg, event)

    async def take_effect(msg: Msg, event: envelope_pb2.Envelope) -> None:
        try:
            await handler(event)
        except Exception as exc:
            delivered = msg.metadata.num_delivered
            log.warning(
                "event_effect_failed",
                durable=durable,
                event_id=event.id,
                event_type=event.type,
                attempt=delivered,
                error=type(exc).__name__,
            )
            if delivered < max_deliver:
                EVENTS_HANDLED.labels(durable, "retry").inc()
                await msg.nak(delay=redelivery_delay(delivered))
                return
            log.error("event_given_up", durable=durable, event_id=event.id, attempts=delivered)
            EVENTS_HANDLED.labels(durable, "dead_letter").inc()
            DEAD_LETTERS.labels(durable).inc()
            if on_give_up is not None:
                await on_give_up(event, delivered, exc)
            await msg.term()
        else:
            EVENTS_HANDLED.labels(durable, "ok").inc()
            await msg.ack()

    async def handle_all(msgs: list[Msg]) -> None:
        async with working_on(msgs, every=ack_wait / 3):
            if concurrent:  # effects independent of one another: the batch at once
                # every handler ends before a failure goes up (none left running once the
                # heartbeat stops)
                done = await asyncio.gather(*(handle(msg) for msg in msgs), return_exceptions=True)
                for outcome in done:
                    if isinstance(outcome, BaseException):
                        raise outcome
            else:
                for msg in msgs:
                    await handle(msg)

    # Concurrent batches overlap: the next is fetched and handled while the last one's slowest
    # effects finish (an e-mail, writes waiting to go together), up to BATCHES_AT_ONCE.
    working: set[asyncio.Task[None]] = set()

    async def wait_for_room(room: int) -> None:
        while len(working) > room:
            done, _ = await asyncio.wait(working, return_when=asyncio.FIRST_COMPLETED)
            working.difference_update(done)
            # A batch's failure goes up, as when handled in line; a batch cancelled from
            # elsewhere is a failure too, not this consumer's own cancellation.
            failures = [
                RuntimeError("a batch was cancelled") if task.cancelled() else task.exception()
                for task in done
            ]
            for failure in failures:
                if failure is not None:
                    raise failure

    try:
        async with ConsumerLag(stream, durable).watching(sub, stop):
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(batch, wait=1.0)
                except nats.errors.Error as exc:
                    log.warning("consumer_fetch_failed", durable=durable, error=type(exc).__name__)
                    await asyncio.sleep(1.0)
                    continue
                if not msgs:
                    continue
                if not concurrent:
                    await handle_all(msgs)
                    continue
                working.add(asyncio.create_task(handle_all(msgs)))
                await wait_for_room(BATCHES_AT_ONCE - 1)
            await wait_for_room(0)
    except asyncio.CancelledError:  # as a batch handled in line would be
        for task in working:
            task.cancel()
        raise
    finally:
        if working:  # a failure went up: the other batches end first (their heartbeats too)
            await asyncio.gather(*working, return_exceptions=True)
        # Unsubscribe before the connection drains, or drain waits for the pull to time out.
        await sub.unsubscribe()
