"""Delivery channels: e-mail over real SMTP, SMS through a provider interface."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from typing import Protocol

import aiosmtplib

from dmp_kit.errors import Unavailable
from dmp_kit.logging import get_logger
from dmp_notify.config import NotifySettings
from dmp_notify.domain import Message

log = get_logger(__name__)


class EmailSender:
    def __init__(self, settings: NotifySettings) -> None:
        self._s = settings

    async def send(self, to: str, message: Message, delivery: str = "") -> None:
        """`delivery` names the delivery (event, recipient, channel): a message sent again for
        it (the one window of DESIGN's at-least-once, a process killed between the send and
        its record) carries the same Message-ID, which mail clients show once."""
        mail = EmailMessage()
        domain_part = parseaddr(self._s.mail_from)[1].rpartition("@")[2] or "dmp.localhost"
        mail["Message-ID"] = (
            f"<{hashlib.sha256(delivery.encode()).hexdigest()[:32]}@{domain_part}>"
            if delivery
            else make_msgid(domain=domain_part)
        )
        mail["From"] = self._s.mail_from
        mail["To"] = to
        mail["Subject"] = message.subject
        mail.set_content(message.body)
        try:
            await aiosmtplib.send(
                mail,
                hostname=self._s.smtp_host,
                port=self._s.smtp_port,
                start_tls=self._s.smtp_starttls,
                username=self._s.smtp_username or None,
                password=self._s.smtp_password.get_secret_value() or None,
                timeout=self._s.smtp_timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("email_failed", error=type(exc).__name__)
            raise Unavailable("the mail relay did not accept the message") from exc


class SmsProvider(Protocol):
    async def send(self, to: str, text: str) -> None: ...


class LoggingSmsProvider:
    """Development provider: records that a text left, never the text (it holds codes)."""

    async def send(self, to: str, text: str) -> None:
        log.info("sms_sent", provider="log", chars=len(text))


def sms_provider(name: str) -> SmsProvider:
    if name == "log":
        return LoggingSmsProvider()
    raise ValueError(f"unknown SMS provider {name!r}; available: log")
