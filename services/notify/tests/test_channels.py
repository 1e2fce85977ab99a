"""E-mail over real SMTP (the harness's sink): one delivery, one Message-ID, however often sent."""

from __future__ import annotations

import email
from email import policy
from urllib.parse import urlparse

from dmp_notify.channels import EmailSender
from dmp_notify.config import NotifySettings
from dmp_notify.domain import Message
from dmp_stack.testing import Infra


async def test_a_delivery_sent_again_carries_the_same_message_id(infra: Infra) -> None:
    smtp = urlparse(infra.smtp.url)
    settings = NotifySettings.model_construct(
        smtp_host=smtp.hostname,
        smtp_port=smtp.port,
        smtp_starttls=False,
        smtp_username="",
        smtp_password=NotifySettings.model_fields["smtp_password"].default,
        smtp_timeout_seconds=10.0,
        mail_from="DMP <no-reply@dmp.localhost>",
    )
    sender = EmailSender(settings)
    to = "message-id-check@example.org"
    message = Message("Un nouveau document dans votre DMP", "Bonjour")
    for delivery in (
        "event-1:patient:x:email",
        "event-1:patient:x:email",
        "event-2:patient:x:email",
    ):
        await sender.send(to, message, delivery=delivery)
    await sender.send(to, message)  # a one-time code: no delivery, an id of its own
    ids = [
        str(email.message_from_bytes(path.read_bytes(), policy=policy.default)["Message-ID"])
        for path in sorted(infra.maildir.glob("*.eml"))
        if to in path.read_text(errors="replace")
    ]
    assert len(ids) == 4
    assert len(set(ids)) == 3, ids
    assert all(i.startswith("<") and i.endswith("@dmp.localhost>") for i in ids), ids
