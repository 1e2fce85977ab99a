"""Audit's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from dmp_kit.config import Settings, dev_key

DEV_AUDIT_KEY = dev_key("audit")


class AuditSettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "audit_key": DEV_AUDIT_KEY,
    }
    key_settings: ClassVar[tuple[str, ...]] = (*Settings.key_settings, "audit_key")

    # Audit's own secret (base64 of 32 bytes): its tree-head signing key derives from it. No
    # other process holds it.
    audit_key: SecretStr = SecretStr(DEV_AUDIT_KEY)
    # Entries appended per write (one chunk document each): the larger, the faster the log
    # fills and the faster it is verified.
    append_batch: int = 1000
    # A tree head is signed at least this often while entries arrive…
    checkpoint_interval_seconds: float = 1.0
    # …and at least every this many entries.
    checkpoint_every_entries: int = 10_000
    # How long JetStream waits for an acknowledgement before it redelivers.
    ack_wait_seconds: float = 30.0
    # Decompressed chunks kept in memory to answer access-log reads.
    chunk_cache: int = 256
    access_log_page_max: int = 100

    @property
    def audit_key_bytes(self) -> bytes:
        return self.key_bytes("audit_key")
