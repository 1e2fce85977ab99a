"""Settings shared by every service: pydantic-settings, `DMP_` prefix, a dev-secret guard."""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Published on purpose: these values only ever work with DMP_ENV=dev.
DEV_MASTER_KEY = base64.b64encode(b"dmp-dev-master-key-NOT-A-SECRET!").decode()
DEV_ADMIN_PASSWORD = "dev-admin-password"  # noqa: S105

DEFAULT_PORTS: dict[str, int] = {
    "identity": 50051,
    "dossier": 50052,
    "consent": 50053,
    "audit": 50054,
    "notify": 50055,
    "ingest": 50056,
}


class Env(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class DefaultSecretError(ValueError):
    """A secret still has its published development value outside dev mode."""


class Settings(BaseSettings):
    """Settings every service reads. Each service subclasses it for its own."""

    model_config = SettingsConfigDict(env_prefix="DMP_", extra="ignore")

    # Secrets whose published development value is refused unless env is dev.
    published_secrets: ClassVar[dict[str, str]] = {"master_key": DEV_MASTER_KEY}

    env: Env = Env.PROD
    log_level: str = "INFO"

    mongo_url: str = "mongodb://localhost:27017/"
    mongo_db: str = ""
    mongo_timeout_ms: int = 3000

    nats_url: str = "nats://localhost:4222"
    # Copies of each JetStream stream: 1 on a single server, 3 on a production cluster.
    nats_stream_replicas: int = 1

    identity_addr: str = f"localhost:{DEFAULT_PORTS['identity']}"
    dossier_addr: str = f"localhost:{DEFAULT_PORTS['dossier']}"
    consent_addr: str = f"localhost:{DEFAULT_PORTS['consent']}"
    audit_addr: str = f"localhost:{DEFAULT_PORTS['audit']}"
    notify_addr: str = f"localhost:{DEFAULT_PORTS['notify']}"
    ingest_addr: str = f"localhost:{DEFAULT_PORTS['ingest']}"
    grpc_listen: str = ""
    grpc_deadline_seconds: float = 5.0
    shutdown_grace_seconds: float = 10.0

    jwt_issuer: str = "https://dmp.localhost/identity"
    jwt_audience: str = "dmp"

    # base64 of 32 bytes; envelope-encrypts keys at rest and keys log pseudonyms.
    master_key: SecretStr = SecretStr(DEV_MASTER_KEY)

    # dev/test only: a file holding a number of seconds added to the wall clock.
    clock_offset_file: str = ""

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_dev(self) -> Self:
        if self.env is Env.DEV:
            return self
        for name, published in self.published_secrets.items():
            value = getattr(self, name)
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            if plain == published:
                raise DefaultSecretError(
                    f"DMP_{name.upper()} has its published development value; "
                    f"set a real secret (DMP_ENV={self.env.value} refuses it)"
                )
        if self.clock_offset_file and self.env is Env.PROD:
            raise ValueError("DMP_CLOCK_OFFSET_FILE is for dev and test only")
        try:
            key = base64.b64decode(self.master_key.get_secret_value(), validate=True)
        except ValueError as exc:
            raise ValueError("DMP_MASTER_KEY must be base64") from exc
        if len(key) != 32:
            raise ValueError("DMP_MASTER_KEY must encode exactly 32 bytes")
        return self

    @property
    def master_key_bytes(self) -> bytes:
        return base64.b64decode(self.master_key.get_secret_value())

    def listen_address(self, service: str) -> str:
        return self.grpc_listen or f"[::]:{DEFAULT_PORTS[service]}"

    def database_name(self, service: str) -> str:
        return self.mongo_db or service
