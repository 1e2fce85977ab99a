"""From events to notifications: the inbox, then e-mail and SMS as each person chose.

Exactly once in effect: the inbox entry is keyed by (event, recipient), each delivery by
(event, recipient, channel) in the delivery log, recorded once it was made. The inbox entry's
insert says whether the event is new for its recipient: then nothing was sent for it yet, and
the messages go without asking the log. An event seen before (redelivered after a failed send
or a crash) asks the log for each channel: what was sent is not sent again, what failed is
tried again. A failed send fails the event, which JetStream redelivers later (with backoff);
while a handler works, the consumer tells JetStream so, and nothing is redelivered under it for
a minute (dmp_kit.bus's HOLD_SECONDS). Two windows are left, where a message goes twice rather
than never, an e-mail with the same Message-ID both times: a process that dies between a send
and its record, and a batch held over that minute, whose events another replica (or this
process's next batch) then handles while the first still works on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from zoneinfo import ZoneInfo

import grpc
from cachetools import TTLCache

from dmp.events.v1 import envelope_pb2
from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp_kit.bus import EventBus, run_consumer
from dmp_kit.clock import Clock
from dmp_kit.config import Env
from dmp_kit.metrics import Counter
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.status import error_from_rpc
from dmp_kit.service_auth import ServiceTokens
from dmp_notify import domain
from dmp_notify.channels import EmailSender, SmsProvider
from dmp_notify.config import NotifySettings
from dmp_notify.store import NotifyStore

PARIS = ZoneInfo("Europe/Paris")
CONTACT_TTL_SECONDS = 60.0
DELIVERIES = Counter(
    "dmp_notify_deliveries_total",
    "Notices delivered by channel (inbox, email, sms) and outcome (sent, failed, skipped)",
    ["channel", "outcome"],
)
CONTACT_CACHE = 50_000
# (stream, durable, subject): each a durable consumer of its own
CONSUMERS = (
    ("DOSSIER", "notify-document-added", "document.added"),
    ("DOSSIER", "notify-reminder", "document.reminder_due"),
    ("DOSSIER", "notify-access-first", "access.first"),
    ("CONSENT", "notify-emergency-access", "consent.>"),
    ("IDENTITY", "notify-login", "identity.login"),
    ("DOSSIER", "notify-dossier-purged", "dossier.purged"),
    ("MESSAGING", "notify-message", "message.sent"),
    ("IDENTITY", "notify-representation", "identity.representation.>"),
    ("AGENDA", "notify-prevention-reminder", "agenda.reminder.due"),
)


class DeliveryFailed(RuntimeError):
    def __init__(self, channel: str, cause: Exception) -> None:
        super().__init__(f"{channel}: {type(cause).__name__}")
        self.channel = channel
        self.cause = cause


class Notifier:
    def __init__(
        self,
        settings: NotifySettings,
        store: NotifyStore,
        clock: Clock,
        email: EmailSender,
        sms: SmsProvider,
        identity: identity_pb2_grpc.IdentityServiceStub,
        tokens: ServiceTokens,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.email = email
        self.sms = sms
        self.identity = identity
        self.tokens = tokens
        self._contacts: TTLCache[str, Person] = TTLCache(CONTACT_CACHE, CONTACT_TTL_SECONDS)

    def notices(self, event: envelope_pb2.Envelope) -> list[domain.Notice]:
        ins = event.patient_ins
        kind = event.WhichOneof("payload")
        if not ins:
            return []
        if kind == "document_added":
            return domain.document_added(ins, event.document_added.hidden_from_patient)
        if kind == "access_first":
            return domain.access_first(ins, event.access_first.profession)
        if kind == "emergency_access_granted":
            grant = event.emergency_access_granted
            return domain.emergency_access(ins, grant.mode, grant.attending_physician_rpps)
        if kind == "message_sent":
            sent = event.message_sent
            return domain.message_received(sent.recipient_kind, sent.recipient_id)
        if kind == "consent_changed" and event.consent_changed.change == "trusted_person_invited":
            return domain.trusted_invitation(event.consent_changed.trusted_ins)
        if kind == "reminder_due":
            return domain.reminder(ins)
        if kind == "prevention_reminder_due":
            return domain.prevention_reminder(ins, event.prevention_reminder_due.act)
        if kind in domain.REPRESENTATION_KINDS:
            told = getattr(event, kind)
            return domain.representation(
                kind, ins, list(told.legal_representatives), told.majority_date
            )
        if kind == "login_attempted":
            attempt = event.login_attempted
            if attempt.account_kind == "patient" and attempt.outcome in domain.LOGIN_OUTCOMES:
                when = event.occurred_at.ToDatetime(tzinfo=UTC).astimezone(PARIS)
                return domain.login(ins, when.strftime("%d/%m/%Y à %H:%M"), attempt.outcome)
        return []

    async def give_up(self, event: envelope_pb2.Envelope, attempts: int, exc: Exception) -> None:
        """After the last attempt: a dead letter an administrator sees (no message content)."""
        await self.store.dead_letter(
            {
                "_id": event.id,
                "event_type": event.type,
                "channel": exc.channel if isinstance(exc, DeliveryFailed) else "",
                "attempts": attempts,
                "last_error": str(exc) if isinstance(exc, DeliveryFailed) else type(exc).__name__,
                "failed_at": self.clock.now(),
            }
        )

    async def on_event(self, event: envelope_pb2.Envelope) -> None:
        ins = event.patient_ins
        if event.WhichOneof("payload") == "dossier_purged":
            await self.store.forget_dossier(ins, event.occurred_at.ToDatetime(tzinfo=UTC))
            return
        # The patient's record: when their dossier was last purged, and their channels (most
        # notices are theirs), in one read.
        patient = f"patient:{ins}"
        state = await self.store.recipient_state(patient) if ins else None
        purged = state.purged_at if state is not None else None
        if purged is not None and event.occurred_at.ToDatetime(tzinfo=UTC) <= purged.replace(
            tzinfo=UTC
        ):
            return  # about a dossier purged since: nothing of it is told
        if event.WhichOneof("payload") == "representation_ended":
            # Identity no longer names them: the minor's representatives are not told anything
            # more from now on, without waiting for the contact cache to expire.
            self._contacts.pop(patient, None)
        notices = self.notices(event)
        patients = [n for n in notices if n.recipient == patient]
        if patients:
            patient_told, representatives_told = domain.audience(
                patients[0].kind,
                event.document_added.hidden_from_legal_representatives,
                event.reminder_due.label,
            )
            if representatives_told:
                representatives = (await self.person(patient)).representatives
                notices += domain.for_representatives(patients, ins, representatives)
            if not patient_told:
                notices = [n for n in notices if n not in patients]
        known = {patient: state.channels} if state is not None else {}
        for notice in notices:
            await self.deliver(event.id, notice, ins, known.get(notice.recipient))

    async def deliver(
        self,
        event_id: str,
        notice: domain.Notice,
        ins: str,
        chosen: dict[str, list[str]] | None = None,
    ) -> None:
        """`chosen`: the recipient's channels when already read (else read here)."""
        now = self.clock.now()
        first = await self.store.add_notification(
            {
                "_id": f"{event_id}:{notice.recipient}",
                "recipient": notice.recipient,
                "ins": ins,  # the dossier it is about, for its purge
                "kind": notice.kind,
                "title": notice.message.subject,
                "body": notice.message.body,
                "created_at": now,
                "read": False,
            }
        )
        DELIVERIES.labels("inbox", "sent").inc()
        if chosen is None:
            chosen = (await self.store.recipient_state(notice.recipient)).channels
        channels = domain.validate_preferences(chosen).get(notice.kind, frozenset())
        if not channels:
            return
        person = await self.person(notice.recipient)
        email, phone = person.email, person.phone
        for channel in sorted(channels):
            destination = email if channel == "email" else phone
            if not destination:
                DELIVERIES.labels(channel, "skipped").inc()
                continue  # no address for this channel: the inbox has it
            key = f"{event_id}:{notice.recipient}:{channel}"
            if not first and await self.store.was_delivered(key):
                continue  # sent already: the event is delivered again for another's failure
            try:
                if channel == "email":
                    await self.email.send(destination, notice.message, delivery=key)
                else:
                    await self.sms.send(destination, domain.sms_text(notice.message))
            except Exception as exc:
                DELIVERIES.labels(channel, "failed").inc()
                raise DeliveryFailed(channel, exc) from exc
            await self.store.delivered(key, channel, now, ins)
            DELIVERIES.labels(channel, "sent").inc()
            if self.settings.env is Env.DEV:  # /dev/outbox lists every message sent
                await self.store.record_dev_message(destination, channel, notice.message, now)

    async def person(self, recipient: str) -> Person:
        """Contact details (and a patient's legal representatives) from identity, which owns
        them; asked with notify's own token and kept a minute (a change applies within
        CONTACT_TTL_SECONDS)."""
        found = self._contacts.get(recipient)
        if found is None:
            found = self._contacts[recipient] = await self._lookup(recipient)
        return found

    async def _lookup(self, recipient: str) -> Person:
        kind, _, ident = recipient.partition(":")
        # No one waits on this answer but the notice: while identity is away (restarting, say)
        # the call waits for it to be back, up to contact_wait_seconds, rather than failing
        # at once and spending one of the event's attempts each time.
        wait = self.settings.contact_wait_seconds

        async def patient(token: str) -> Person:
            found = await self.identity.LookupPatient(
                identity_pb2.LookupPatientRequest(ins=ident),
                wait_for_ready=True,
                **call_options(wait, token=token),
            )
            p = found.patient
            return Person(p.email, p.phone, list(p.legal_representatives))

        async def professional(token: str) -> Person:
            found = await self.identity.LookupProfessional(
                identity_pb2.LookupProfessionalRequest(rpps=ident),
                wait_for_ready=True,
                **call_options(wait, token=token),
            )
            return Person(found.professional.email, found.professional.phone, [])

        try:
            return await self.tokens.call(patient if kind == "patient" else professional)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc


@dataclass(frozen=True)
class Person:
    email: str
    phone: str
    representatives: list[str]


def consumers(
    bus: EventBus, notifier: Notifier
) -> list[Callable[[asyncio.Event], Awaitable[None]]]:
    """One background job per durable consumer."""

    def job(stream: str, durable: str, subject: str) -> Callable[[asyncio.Event], Awaitable[None]]:
        async def run(stop: asyncio.Event) -> None:
            await run_consumer(
                bus,
                stream=stream,
                durable=durable,
                subject=subject,
                handler=notifier.on_event,
                stop=stop,
                max_deliver=notifier.settings.max_delivery_attempts,
                on_give_up=notifier.give_up,
                batch=64,
                concurrent=True,  # each notification stands alone: order does not matter
            )

        run.__name__ = durable
        return run

    return [job(*spec) for spec in CONSUMERS]
