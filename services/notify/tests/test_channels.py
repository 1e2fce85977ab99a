"""E-mail over real SMTP (the harness's sink): one delivery, one Message-ID, however often sent."""

from __future__ import annotations

import asyncio
import email
from collections.abc import Callable
from email import policy
from urllib.parse import urlparse

from dmp_notify.channels import EmailSender
from dmp_notify.config import NotifySettings
from dmp_notify.domain import Message
from dmp_stack.testing import Infra


def settings_for(infra: Infra) -> NotifySettings:
    smtp = urlparse(infra.smtp.url)
    return NotifySettings.model_construct(
        smtp_host=smtp.hostname,
        smtp_port=smtp.port,
        smtp_starttls=False,
        smtp_username="",
        smtp_password=NotifySettings.model_fields["smtp_password"].default,
        smtp_timeout_seconds=10.0,
        smtp_connections=16,
        mail_from="DMP <no-reply@dmp.localhost>",
    )


def sent_to(infra: Infra, to: str) -> int:
    return sum(to in path.read_text(errors="replace") for path in infra.maildir.glob("*.eml"))


def count_opens(sender: EmailSender) -> Callable[[], int]:
    """How many connections `sender` has opened since."""
    opened = 0
    open_one = sender._open

    async def counted() -> object:
        nonlocal opened
        opened += 1
        return await open_one()

    sender._open = counted  # type: ignore[method-assign]
    return lambda: opened


async def test_messages_share_a_connection_and_a_closed_one_is_replaced(infra: Infra) -> None:
    sender = EmailSender(settings_for(infra))
    to = "connection-check@example.org"
    message = Message("Un nouveau document dans votre DMP", "Bonjour")
    await sender.send(to, message, delivery="event-a:patient:x:email")
    kept = sender._idle[0]
    await sender.send(to, message, delivery="event-b:patient:x:email")
    assert sender._idle == [kept], "the second message went over the first one's connection"
    kept.close()  # as a relay closing an idle connection
    await sender.send(to, message, delivery="event-c:patient:x:email")
    assert len(sender._idle) == 1 and sender._idle[0] is not kept
    assert sent_to(infra, to) == 3


async def test_bursts_of_messages_reuse_the_kept_connections(infra: Infra) -> None:
    """Twelve e-mails sent at once (a batch of events) open a connection each, none waiting for
    another's; all twelve are kept, and the next burst opens none."""
    sender = EmailSender(settings_for(infra))
    opened = count_opens(sender)
    to = "burst-check@example.org"
    message = Message("Un nouveau document dans votre DMP", "Bonjour")
    for burst in range(2):
        await asyncio.gather(
            *(
                sender.send(to, message, delivery=f"event-{burst}-{i}:patient:x:email")
                for i in range(12)
            )
        )
        assert opened() == 12
        assert len(sender._idle) == 12 <= sender._s.smtp_connections
    assert sent_to(infra, to) == 24


async def test_notices_beyond_the_kept_connections_wait_for_one_and_a_code_does_not(
    infra: Infra,
) -> None:
    """Forty notices at once (a consumer's batch of events) go over `smtp_connections`
    connections, each opened once and kept; a one-time code sent meanwhile opens one of its
    own rather than wait for them."""
    settings = settings_for(infra)
    settings.smtp_connections = 5
    sender = EmailSender(settings)
    opened = count_opens(sender)
    to = "many-check@example.org"
    message = Message("Un nouveau document dans votre DMP", "Bonjour")
    burst = asyncio.gather(
        *(sender.send(to, message, delivery=f"event-{i}:patient:x:email") for i in range(40))
    )
    await asyncio.sleep(0)  # the notices have taken every slot
    await sender.send(to, Message("Votre code", "123456"))
    await burst
    assert opened() == 5 + 1
    assert len(sender._idle) == 5
    assert sent_to(infra, to) == 41


async def test_a_delivery_sent_again_carries_the_same_message_id(infra: Infra) -> None:
    sender = EmailSender(settings_for(infra))
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


async def test_french_text_arrives_intact_and_no_header_can_be_injected(infra: Infra) -> None:
    sender = EmailSender(settings_for(infra))
    to = "accents-check@example.org"
    subject = "Accès en urgence à votre DMP — Mon espace santé"
    body = "Bonjour,\n\nUn médecin a consulté votre dossier médical partagé en urgence.\n"
    await sender.send(to, Message(subject, body), delivery="event-z:patient:x:email")
    (path,) = [p for p in infra.maildir.glob("*.eml") if to in p.read_text(errors="replace")]
    raw = path.read_bytes()
    assert raw.isascii(), "7-bit through any relay"
    received = email.message_from_bytes(raw, policy=policy.default)
    assert received["Subject"] == subject
    text = received.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.replace("\r\n", "\n") == body  # the sink keeps the wire's line ends
    # every character Python splits lines at, not only \r and \n (compat32 writes an ASCII
    # subject as it is: "\v\v" would end the headers and start a body of the sender's choice)
    breaks = ["\r\n", "\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
    for bad_to, bad_subject in (
        ("victim@example.org\r\nBcc: spy@example.org", "Bonjour"),
        *((to, f"Bonjour{brk}Bcc: spy@example.org") for brk in breaks),
        (to, "Bonjour\v\vspy@example.org wrote this body"),
    ):
        try:
            await sender.send(bad_to, Message(bad_subject, "x"))
        except ValueError:
            continue
        raise AssertionError(f"a header with a line break was sent: {bad_subject!r}")
    assert not [p for p in infra.maildir.glob("*.eml") if "spy@" in p.read_text(errors="replace")]
    # the connection a refused message never used is still there for the next one
    await sender.send(to, Message("Bonjour", "x"))
    assert len(sender._idle) == 1


async def test_a_long_subject_folds_and_a_sender_name_may_be_french(infra: Infra) -> None:
    settings = settings_for(infra)
    settings.mail_from = "Mon espace santé <no-reply@dmp.localhost>"
    sender = EmailSender(settings)
    to = "long-subject-check@example.org"
    subject = "Rappel:" + "x" * 1200  # no space to fold at
    await sender.send(to, Message(subject, "Bonjour"), delivery="event-long:patient:x:email")
    (path,) = [p for p in infra.maildir.glob("*.eml") if to in p.read_text(errors="replace")]
    raw = path.read_bytes()
    assert raw.isascii()
    assert max(len(line) for line in raw.splitlines()) <= 998, "RFC 5322's line limit"
    received = email.message_from_bytes(raw, policy=policy.default)
    assert received["Subject"] == subject
    sender_address = received["From"].addresses[0]
    assert sender_address.display_name == "Mon espace santé"
    assert sender_address.addr_spec == "no-reply@dmp.localhost"


async def test_a_notice_sent_to_many_arrives_as_rendered_whole_for_each(infra: Infra) -> None:
    """A notice's rendering is kept for its next recipients: each still gets their own To and
    Message-ID, and the same message as the whole rendering would have written."""
    settings = settings_for(infra)
    settings.mail_from = "Mon espace santé <no-reply@dmp.localhost>"
    sender = EmailSender(settings)
    notice = Message("Accès à votre dossier — Mon espace santé", "Bonjour,\n\nUn médecin.\n")
    recipients = ["first-notice@example.org", "second-notice@example.org"]
    for i, to in enumerate(recipients):
        await sender.send(to, notice, delivery=f"event-n:{i}:email")
    await sender.send("otp-notice@example.org", Message("Code", "Votre code : 123456"))
    assert list(sender._rendered) == [notice], "kept once, and never a one-time code"
    for i, to in enumerate(recipients):
        (path,) = [p for p in infra.maildir.glob("*.eml") if to in p.read_text(errors="replace")]
        raw = path.read_bytes()
        assert raw.isascii()
        received = email.message_from_bytes(raw, policy=policy.default)
        whole = email.message_from_bytes(
            sender._message(to, notice, f"event-n:{i}:email").as_bytes(), policy=policy.default
        )
        for header in ("From", "To", "Subject", "Message-ID", "Content-Type", "MIME-Version"):
            assert received[header] == whole[header], header
        assert received["To"] == to and len(received.get_all("To")) == 1
        assert (
            received.get_body(("plain",))
            .get_content()
            .replace(  # type: ignore[union-attr]
                "\r\n", "\n"
            )
            == whole.get_body(("plain",)).get_content()
        )  # type: ignore[union-attr]
    ids = {
        str(email.message_from_bytes(p.read_bytes(), policy=policy.default)["Message-ID"])
        for p in infra.maildir.glob("*.eml")
        if "-notice@" in p.read_text(errors="replace")
    }
    assert len(ids) == 3


async def test_no_header_can_be_injected_into_a_notice(infra: Infra) -> None:
    sender = EmailSender(settings_for(infra))
    for bad_to, bad_subject in (
        ("victim@example.org\r\nBcc: spy@example.org", "Bonjour"),
        ("victim@example.org\nBcc: spy@example.org", "Bonjour"),
        ("victim@example.org", "Bonjour\r\nBcc: spy@example.org"),
        ("victim@example.org", "Bonjour\u2028Bcc: spy@example.org"),
    ):
        try:
            await sender.send(bad_to, Message(bad_subject, "x"), delivery="event-i:p:email")
        except ValueError:
            continue
        raise AssertionError(f"a notice with a line break was sent: {bad_to!r} {bad_subject!r}")
    assert not [p for p in infra.maildir.glob("*.eml") if "spy@" in p.read_text(errors="replace")]
    assert not sender._rendered
