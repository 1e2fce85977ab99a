"""Agenda's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from dmp_kit.config import Settings
from dmp_kit.service_auth import DEV_SERVICE_ACCOUNT_KEYS


class AgendaSettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "service_account_key": DEV_SERVICE_ACCOUNT_KEYS["agenda"],
    }
    key_settings: ClassVar[tuple[str, ...]] = (*Settings.key_settings, "service_account_key")

    # This service's own client credential at identity (dmp_kit.service_auth): it reads a
    # patient's birth date (role patient_birth_reader), nothing else.
    service_account_key: SecretStr = SecretStr(DEV_SERVICE_ACCOUNT_KEYS["agenda"])

    # An empty path means the rules shipped with the service (data/prevention.toml).
    prevention_rules_file: str = ""
    # Upcoming reminders are shown this many days ahead.
    reminders_horizon_days: int = Field(365, ge=0, le=3660)
    # How often the reminders due are looked for (and announced once each).
    schedule_interval_seconds: float = Field(60.0, gt=0)
    # An appointment is set at most this many years ahead.
    appointments_years_ahead: int = Field(5, ge=1, le=50)
    appointments_max_listed: int = Field(500, ge=1)
