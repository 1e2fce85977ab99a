"""Ingest's settings."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import ClassVar

from pydantic import SecretStr

from dmp_kit.config import Settings
from dmp_kit.service_auth import DEV_SERVICE_ACCOUNT_KEYS


class IngestSettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "service_account_key": DEV_SERVICE_ACCOUNT_KEYS["ingest"],
    }
    key_settings: ClassVar[tuple[str, ...]] = (*Settings.key_settings, "service_account_key")

    # This service's own client credential at identity (dmp_kit.service_auth): the private
    # Ed25519 key, base64 of 32 bytes. Identity holds its public half.
    service_account_key: SecretStr = SecretStr(DEV_SERVICE_ACCOUNT_KEYS["ingest"])

    # Where a batch's body waits while it is processed (a volume in production: a batch
    # interrupted by a restart resumes from it).
    spool_dir: str = str(Path(tempfile.gettempdir()) / "dmp-ingest-spool")
    # Claims written per insert_many.
    write_batch: int = 2000
    # Refused rows kept (line and reason) per batch; the count covers all of them.
    max_rejects_kept: int = 1000
    # How often the REMB documents whose history changed with time alone are rebuilt: the
    # rule asks for the day; each pass queries only the dossiers concerned.
    remb_refresh_interval_seconds: float = 3600.0
    # Dossiers rebuilt per pass at most (the next pass takes the rest).
    remb_pass_size: int = 500
