"""Notify's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from dmp_kit.config import DEV_MASTER_KEY, Settings


class NotifySettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {"master_key": DEV_MASTER_KEY}

    smtp_host: str = "localhost"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_seconds: float = 10.0
    mail_from: str = "DMP <no-reply@dmp.localhost>"
    # Attempts at an event's deliveries (with backoff: 0.5 s, 1 s, 2 s …) before its dead letter.
    max_delivery_attempts: int = 8
    # "log": a provider that records that an SMS left, without its text (dev).
    sms_provider: str = "log"
