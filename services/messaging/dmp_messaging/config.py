"""Messaging's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from dmp_kit.config import Settings, dev_key

DEV_MESSAGING_KEY = dev_key("messaging")


class MessagingSettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "messaging_key": DEV_MESSAGING_KEY,
    }
    key_settings: ClassVar[tuple[str, ...]] = (*Settings.key_settings, "messaging_key")

    # Messaging's own secret (base64 of 32 bytes): wraps every patient's message key. No other
    # process holds it.
    messaging_key: SecretStr = SecretStr(DEV_MESSAGING_KEY)
    conversations_page_size: int = 20
    conversations_max_page_size: int = 100
    # A search opens at most this many of the caller's conversations per call (`next` goes on).
    search_scan_limit: int = Field(500, ge=1)
