"""The dossier service's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from dmp_kit.config import Settings, dev_key

DEV_DOSSIER_KEY = dev_key("dossier")


class DossierSettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "dossier_key": DEV_DOSSIER_KEY,
    }
    key_settings: ClassVar[tuple[str, ...]] = (*Settings.key_settings, "dossier_key")

    # The dossier's own secret (base64 of 32 bytes): wraps every patient's data key. No other
    # process holds it.
    dossier_key: SecretStr = SecretStr(DEV_DOSSIER_KEY)
    max_document_bytes: int = 20 * 1024 * 1024
    catalogue_file: str = ""
    page_size: int = 50
    max_page_size: int = 200
    # How often the scheduled rules (reminders, automatic reveal, purges) run.
    schedule_interval_seconds: float = 60.0

    @property
    def dossier_key_bytes(self) -> bytes:
        return self.key_bytes("dossier_key")
