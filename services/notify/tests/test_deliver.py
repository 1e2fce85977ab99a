"""An event's notices delivered on the real database and the real SMTP sink: once each, three
database operations for a new event's e-mail, and an event delivered again sends only what
was not sent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from dmp.events.v1 import dossier_pb2 as dossier_events
from dmp.events.v1 import envelope_pb2
from dmp_kit.clock import SystemClock
from dmp_kit.config import Env
from dmp_kit.events import new_event
from dmp_notify import store as notify_store
from dmp_notify.channels import EmailSender, LoggingSmsProvider
from dmp_notify.deliver import DeliveryFailed, Notifier, Person
from dmp_notify.store import NotifyStore
from dmp_stack.infra import free_port
from dmp_stack.testing import CommandsSent, Infra, make_ins
from services.notify.tests.test_channels import sent_to, settings_for

pytestmark = pytest.mark.asyncio(loop_scope="session")
DATABASE = "notify_deliver_test"


class Directory(Notifier):
    """A notifier whose contact details are given, not asked of identity (not under test)."""

    address = ""

    async def _lookup(self, recipient: str) -> Person:
        return Person(self.address, "", [])


@pytest.fixture
async def database(infra: Infra) -> AsyncIterator[tuple[NotifyStore, CommandsSent]]:
    sent = CommandsSent()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongo.url, tz_aware=True, event_listeners=[sent]
    )
    await client.drop_database(DATABASE)
    store = NotifyStore(client[DATABASE])
    await store.ensure_indexes()
    yield store, sent
    await client.drop_database(DATABASE)
    await client.close()


def notifier(infra: Infra, store: NotifyStore, to: str, smtp_port: int = 0) -> Directory:
    settings = settings_for(infra)
    settings.env = Env.PROD  # no development copy of each message
    if smtp_port:
        settings.smtp_port = smtp_port
    found = Directory(
        settings,
        store,
        SystemClock(),
        EmailSender(settings),
        LoggingSmsProvider(),
        identity=None,  # type: ignore[arg-type]
        tokens=None,  # type: ignore[arg-type]
    )
    found.address = to
    return found


def document_added(ins: str) -> envelope_pb2.Envelope:
    return new_event(
        "document.added",
        dossier_events.DocumentAdded(document_id=f"doc-{uuid.uuid4().hex[:8]}"),
        source="dossier",
        clock=SystemClock(),
        patient_ins=ins,
    )


async def patient_by_email(store: NotifyStore, what: str) -> tuple[str, str, envelope_pb2.Envelope]:
    """A patient told of new documents by e-mail: their INS, address, and a new document's
    event."""
    ins = make_ins()
    await store.put_preferences(f"patient:{ins}", {"document_added": ["email"]})
    return ins, f"{what}-{ins}@example.org", document_added(ins)


def commands(sent: CommandsSent) -> list[str]:
    return [f"{name} {command.get(name)}" for name, command in sent.sent]


async def test_a_new_event_is_one_inbox_entry_and_one_message_in_three_operations(
    infra: Infra, database: tuple[NotifyStore, CommandsSent]
) -> None:
    store, sent = database
    ins, to, event = await patient_by_email(store, "deliver")
    notify = notifier(infra, store, to)
    sent.sent.clear()
    await notify.on_event(event)
    assert commands(sent) == [
        "find preferences",  # the patient's channels and last purge
        "insert notifications",  # the inbox entry: new, so nothing was sent for it yet
        "insert deliveries",  # the message, recorded once it left
    ]
    assert sent_to(infra, to) == 1
    # Delivered again (another notice of it failed, say): the log says it was sent.
    sent.sent.clear()
    await notify.on_event(event)
    assert commands(sent) == ["find preferences", "insert notifications", "find deliveries"]
    assert sent_to(infra, to) == 1
    assert await store.notifications.count_documents({"ins": ins}) == 1


async def test_a_batch_of_events_writes_each_kind_in_one_command(
    infra: Infra, database: tuple[NotifyStore, CommandsSent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer handles a fetched batch at once: its inbox entries go as one insert, and so do
    its delivery records, each notice still told once and its e-mail recorded. (Windows of
    0.3 s here, so that a slow machine does not split the batch.)"""
    original, sent = database
    for window in ("INBOX_WINDOW", "RECORDS_WINDOW"):
        monkeypatch.setattr(notify_store, window, 0.3)
    for longest in ("INBOX_LONGEST", "RECORDS_LONGEST"):
        monkeypatch.setattr(notify_store, longest, 3.0)
    store = NotifyStore(original.db)
    patients = [await patient_by_email(store, f"batch{i}") for i in range(6)]
    notify = notifier(infra, store, "batch@example.org")
    sent.sent.clear()
    await asyncio.gather(*(notify.on_event(event) for _, _, event in patients))
    assert sorted(commands(sent)) == ["find preferences"] * 6 + [
        "insert deliveries",
        "insert notifications",
    ]
    assert sent_to(infra, "batch@example.org") == 6
    for ins, _, event in patients:
        assert await store.notifications.count_documents({"ins": ins}) == 1
        assert await store.was_delivered(f"{event.id}:patient:{ins}:email")


async def test_a_send_that_failed_is_sent_when_the_event_comes_again(
    infra: Infra, database: tuple[NotifyStore, CommandsSent]
) -> None:
    store, _ = database
    ins, to, event = await patient_by_email(store, "retry")
    nowhere = notifier(infra, store, to, smtp_port=free_port())  # no SMTP server there
    with pytest.raises(DeliveryFailed):
        await nowhere.on_event(event)
    assert await store.notifications.count_documents({"ins": ins}) == 1  # the inbox has it
    assert not await store.was_delivered(f"{event.id}:patient:{ins}:email")
    await notifier(infra, store, to).on_event(event)
    assert sent_to(infra, to) == 1
    assert await store.was_delivered(f"{event.id}:patient:{ins}:email")
    await notifier(infra, store, to).on_event(event)
    assert sent_to(infra, to) == 1  # once, however often the event comes


async def test_a_claim_left_sending_by_an_earlier_version_is_sent(
    infra: Infra, database: tuple[NotifyStore, CommandsSent]
) -> None:
    """An earlier version claimed a delivery (`sending`) before sending it; one that died
    mid-send left its claim. The event delivered again sends it rather than lose it."""
    store, _ = database
    ins, to, event = await patient_by_email(store, "claimed")
    await store.add_notification({"_id": f"{event.id}:patient:{ins}", "recipient": "x"})
    key = f"{event.id}:patient:{ins}:email"
    await store.deliveries.insert_one({"_id": key, "channel": "email", "state": "sending"})
    await notifier(infra, store, to).on_event(event)
    assert sent_to(infra, to) == 1
    assert (await store.deliveries.find_one({"_id": key}))["state"] == "sent"
