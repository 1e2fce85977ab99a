"""Notify's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from dmp_kit.config import Settings
from dmp_kit.service_auth import DEV_SERVICE_ACCOUNT_KEYS


class NotifySettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "service_account_key": DEV_SERVICE_ACCOUNT_KEYS["notify"],
    }
    key_settings: ClassVar[tuple[str, ...]] = (*Settings.key_settings, "service_account_key")

    # This service's own client credential at identity (dmp_kit.service_auth): the private
    # Ed25519 key, base64 of 32 bytes. Identity holds its public half.
    service_account_key: SecretStr = SecretStr(DEV_SERVICE_ACCOUNT_KEYS["notify"])

    smtp_host: str = "localhost"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_seconds: float = 10.0
    # Connections to the relay kept open between messages, and the notices sent at once at
    # most (a one-time code is sent beside them, on a connection of its own if none is free):
    # raise it for a relay slow to answer.
    smtp_connections: int = Field(default=16, ge=1)
    mail_from: str = "DMP <no-reply@dmp.localhost>"
    # Attempts at an event's deliveries (with backoff: 0.5 s, 1 s, 2 s …) before its dead letter.
    max_delivery_attempts: int = 8
    # How long a notice waits for identity (contact details) when it is away, a restart say,
    # before that attempt fails: an outage of our own spends no attempt at once. Under the
    # 60 s a consumer holds an event before another replica may take it (dmp_kit.bus).
    contact_wait_seconds: float = Field(default=30.0, gt=0.0, le=55.0)
    # "log": a provider that records that an SMS left, without its text (dev).
    sms_provider: str = "log"
    # Delivery records older than this are deleted (retention.py). At least a day: an event
    # is redelivered for minutes at most, and its record must outlive every redelivery.
    delivery_retention_days: float = Field(default=30.0, ge=1.0)
    retention_interval_seconds: float = Field(default=3600.0, gt=0.0)
