"""Delivery channels: e-mail over real SMTP, SMS through a provider interface."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from email.charset import BASE64, QP, Charset
from email.header import Header
from email.mime.text import MIMEText
from email.utils import formataddr, make_msgid, parseaddr
from typing import Protocol

import aiosmtplib
from cachetools import LRUCache

from dmp_kit.errors import Unavailable
from dmp_kit.logging import get_logger
from dmp_notify.config import NotifySettings
from dmp_notify.domain import Message

log = get_logger(__name__)
# UTF-8 throughout, 7-bit safe through any relay: the text quoted-printable (readable), a
# subject that is not ASCII in base64 words (choosing the shorter encoding measured the
# quoted-printable length character by character, half a millisecond a subject).
BODY_CHARSET = Charset("utf-8")
BODY_CHARSET.body_encoding = QP
SUBJECT_CHARSET = Charset("utf-8")
SUBJECT_CHARSET.header_encoding = BASE64
# What a header value may not hold: compat32 writes an ASCII value as it is and splits lines
# at every character Python counts as a line break (\v, \f, \x1c-\x1e, \x85, U+2028/9,
# besides \r and \n), so any of them could start a header or the body of its own.
HEADER_BREAKING = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
# An ASCII subject longer than this goes as encoded words too, which fold at any character:
# compat32 folds ASCII only at spaces, and a line may not pass 998 octets (RFC 5322).
RAW_SUBJECT_MAX = 78
# Notices rendered lately, kept for the next recipients of the same one: a notice's subject and
# text are the same for everyone it goes to (one-time codes are never kept). Rendering a
# message and handing it to aiosmtplib as a message object (which copies and renders it again)
# was half of an e-mail's CPU: 0.65 ms an e-mail, 0.30 sent as bytes (bench/README.md).
RENDERED_NOTICES = 256
# A recipient written in the headers as it is (compat32 writes such a value unchanged, and the
# envelope's address is the same): ASCII, no space or anything a header could be folded or
# broken at. Any other goes through the whole rendering.
PLAIN_ADDRESS = re.compile(r"[!-~]{1,254}")


class EmailSender:
    """E-mail over SMTP on connections kept open between messages: opening one per message
    (connect, EHLO, and STARTTLS and AUTH where configured) was most of the e-mail's cost.
    A message takes an idle connection or opens one; a connection the relay has closed
    meanwhile is found out by the send, which is tried once more on a new one.

    Up to `smtp_connections` (16) are kept, and notices (e-mails about events) go that many at
    a time at most: a consumer handles a batch of up to 64 events at once, and each e-mail
    beyond the connections kept opened one (connect, greeting, EHLO) and closed it after, 139
    connections for 500 notices under a GP's submissions. A notice waits for a connection kept
    instead; a one-time code never waits (it is sent on a request's deadline), and opens one
    if none is free."""

    def __init__(self, settings: NotifySettings) -> None:
        self._s = settings
        self._idle: list[aiosmtplib.SMTP] = []
        self._local_hostname: str | None = None  # for EHLO, looked up once
        refuse_breaks("DMP_MAIL_FROM", settings.mail_from)
        name, address = parseaddr(settings.mail_from)
        # A display name that is not ASCII goes as encoded words, the address beside them.
        self._from = formataddr((name, address), charset="utf-8") if name else address
        self._domain = address.rpartition("@")[2] or "dmp.localhost"
        self._address = address  # the envelope's sender
        self._rendered: LRUCache[Message, bytes] = LRUCache(maxsize=RENDERED_NOTICES)
        self._notices = asyncio.Semaphore(settings.smtp_connections)

    def _message(self, to: str, message: Message, delivery: str) -> MIMEText:
        # Built with the standard library's compat32 classes: the modern EmailMessage parsed
        # every header it was given through its header registry, about 1 ms a message, most
        # of an e-mail's CPU. compat32 writes values as they are, so a value that could break
        # a line is refused here (no header can be injected).
        refuse_breaks("the recipient", to)
        mail = self._text(message)
        mail["Message-ID"] = self._message_id(delivery)
        mail["To"] = to
        return mail

    def _text(self, message: Message) -> MIMEText:
        """The message without its recipient and Message-ID."""
        refuse_breaks("the subject", message.subject)
        mail = MIMEText(message.body, "plain", BODY_CHARSET)
        mail["From"] = self._from
        subject = message.subject
        raw = subject.isascii() and len(subject) <= RAW_SUBJECT_MAX
        mail["Subject"] = subject if raw else Header(subject, SUBJECT_CHARSET)
        return mail

    def _message_id(self, delivery: str) -> str:
        if not delivery:
            return make_msgid(domain=self._domain)
        return f"<{hashlib.sha256(delivery.encode()).hexdigest()[:32]}@{self._domain}>"

    def _notice_bytes(self, to: str, message: Message, delivery: str) -> bytes | None:
        """A notice to a plain address as sent: its recipient and Message-ID, then the rest as
        rendered for the notice's last recipient. None for anything else (rendered whole)."""
        if not delivery or not PLAIN_ADDRESS.fullmatch(to):
            return None
        rest = self._rendered.get(message)
        if rest is None:
            rest = self._rendered[message] = self._text(message).as_bytes()
        # "\n" line ends, as rendered: aiosmtplib sends every line end as CRLF
        return f"Message-ID: {self._message_id(delivery)}\nTo: {to}\n".encode() + rest

    async def _open(self) -> aiosmtplib.SMTP:
        if self._local_hostname is None:  # aiosmtplib would look it up for every connection
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            local_hostname=self._local_hostname,
            hostname=self._s.smtp_host,
            port=self._s.smtp_port,
            start_tls=self._s.smtp_starttls,
            username=self._s.smtp_username or None,
            password=self._s.smtp_password.get_secret_value() or None,
            timeout=self._s.smtp_timeout_seconds,
        )
        await client.connect()
        return client

    async def send(self, to: str, message: Message, delivery: str = "") -> None:
        """`delivery` names the delivery (event, recipient, channel): a message sent again for
        it (the one window of DESIGN's at-least-once, a process killed between the send and
        its record) carries the same Message-ID, which mail clients show once. Without one (a
        one-time code), the message does not wait for notices."""
        if not delivery:
            await self._send(to, message, delivery)
            return
        async with self._notices:
            await self._send(to, message, delivery)

    async def _send(self, to: str, message: Message, delivery: str) -> None:
        rendered = self._notice_bytes(to, message, delivery)
        mail = self._message(to, message, delivery) if rendered is None else None
        client = self._idle.pop() if self._idle else None
        while True:
            kept = client is not None
            try:
                if client is None:
                    client = await self._open()
                if mail is not None:
                    await client.send_message(mail)
                else:
                    await client.sendmail(self._address, [to], rendered)
            except (aiosmtplib.SMTPException, OSError) as exc:
                _close(client)
                client = None
                dropped = isinstance(exc, (aiosmtplib.SMTPServerDisconnected, ConnectionError))
                if kept and dropped:
                    continue  # closed by the relay while idle: once more, on a new connection
                log.warning("email_failed", error=type(exc).__name__)
                raise Unavailable("the mail relay did not accept the message") from exc
            except BaseException:
                _close(client)  # in an unknown state (a message refused while written, say)
                raise
            if len(self._idle) < self._s.smtp_connections:
                self._idle.append(client)
            else:
                _close(client)
            return


def refuse_breaks(what: str, value: str) -> None:
    if HEADER_BREAKING.search(value):
        raise ValueError(f"{what} holds a control character or a line break")


def _close(client: aiosmtplib.SMTP | None) -> None:
    """Drops a connection without a word to the relay (it may be gone already)."""
    if client is not None and client.is_connected:
        client.close()


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
