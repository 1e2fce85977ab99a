"""Consent's settings."""

from __future__ import annotations

from dmp_kit.config import Settings


class ConsentSettings(Settings):
    # An empty path means the matrix shipped with the service (data/habilitation.toml).
    habilitation_matrix_file: str = ""
    catalogue_file: str = ""
    emergency_access_hours: float = 24.0
    min_reason_length: int = 10
