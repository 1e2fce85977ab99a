"""The dossier service's settings."""

from __future__ import annotations

from dmp_kit.config import Settings


class DossierSettings(Settings):
    max_document_bytes: int = 20 * 1024 * 1024
    catalogue_file: str = ""
    page_size: int = 50
    max_page_size: int = 200
    # How often the scheduled rules (reminders, automatic reveal, purges) run.
    schedule_interval_seconds: float = 60.0
