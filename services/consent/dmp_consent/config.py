"""Consent's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from dmp_kit.config import Settings
from dmp_kit.service_auth import DEV_SERVICE_ACCOUNT_KEYS


class ConsentSettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "service_account_key": DEV_SERVICE_ACCOUNT_KEYS["consent"],
    }
    key_settings: ClassVar[tuple[str, ...]] = (*Settings.key_settings, "service_account_key")

    # This service's own client credential at identity (dmp_kit.service_auth): the private
    # Ed25519 key, base64 of 32 bytes. Identity holds its public half.
    service_account_key: SecretStr = SecretStr(DEV_SERVICE_ACCOUNT_KEYS["consent"])

    # An empty path means the matrix shipped with the service (data/habilitation.toml).
    habilitation_matrix_file: str = ""
    catalogue_file: str = ""
    emergency_access_hours: float = 24.0
    min_reason_length: int = 10
