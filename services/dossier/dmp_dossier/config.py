"""The dossier service's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from dmp_kit.config import Settings, dev_key
from dmp_kit.service_auth import DEV_SERVICE_ACCOUNT_KEYS

DEV_DOSSIER_KEY = dev_key("dossier")


class DossierSettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "dossier_key": DEV_DOSSIER_KEY,
        "service_account_key": DEV_SERVICE_ACCOUNT_KEYS["dossier"],
    }
    key_settings: ClassVar[tuple[str, ...]] = (
        *Settings.key_settings,
        "dossier_key",
        "service_account_key",
    )

    # The dossier's own secret (base64 of 32 bytes): wraps every patient's data key. No other
    # process holds it.
    dossier_key: SecretStr = SecretStr(DEV_DOSSIER_KEY)
    # This service's own client credential at identity (dmp_kit.service_auth), to read the
    # patient's messages and access log for an export of their data.
    service_account_key: SecretStr = SecretStr(DEV_SERVICE_ACCOUNT_KEYS["dossier"])
    max_document_bytes: int = 20 * 1024 * 1024
    catalogue_file: str = ""
    page_size: int = 50
    max_page_size: int = 200
    # How often the scheduled rules (reminders, automatic reveal, purges) run.
    schedule_interval_seconds: float = 60.0
    # Exports of a patient's data: how long a ready archive is kept, how many a patient may
    # ask for in a day, how long a replica holds one it builds before another may take it up,
    # and how many times one is tried before it is marked failed.
    export_retention_days: float = 7.0
    exports_per_day: int = 3
    export_lease_seconds: float = 600.0
    export_attempts: int = 3
    # Whether a submission may decide on the dossier record its listing's last write was
    # decided on, without reading it (docs/scaling.md). Off while any replica runs a version
    # that does not fence the record's changes (docs/configuration.md).
    remember_records: bool = True

    @property
    def dossier_key_bytes(self) -> bytes:
        return self.key_bytes("dossier_key")
