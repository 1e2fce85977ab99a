"""Settings shared by every service: pydantic-settings, `DMP_` prefix, a dev-secret guard."""

from __future__ import annotations

import base64
import ssl
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dmp_kit.crypto import derive_key

DEV_ADMIN_PASSWORD = "dev-admin-password"  # noqa: S105


def dev_key(purpose: str) -> str:
    """A published development key (base64 of 32 bytes): only ever accepted with DMP_ENV=dev."""
    return base64.b64encode(derive_key(b"dmp-dev-secrets-NOT-A-SECRET", purpose)).decode()


DEV_LOG_PSEUDONYM_KEY = dev_key("log-pseudonyms")
# The development overlay's published NATS and MongoDB passwords start so (deploy/k8s).
DEV_PASSWORD_PREFIXES = {"nats_password": "dev-nats-", "mongo_url": ":dev-mongo-"}

DEFAULT_PORTS: dict[str, int] = {
    "identity": 50051,
    "dossier": 50052,
    "consent": 50053,
    "audit": 50054,
    "notify": 50055,
    "ingest": 50056,
    "messaging": 50057,
    "agenda": 50058,
}

METRICS_PORT_OFFSET = 1000


class Env(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class DefaultSecretError(ValueError):
    """A secret still has its published development value outside dev mode."""


class Settings(BaseSettings):
    """Settings every service reads. Each service subclasses it for its own.

    Each process holds only the secrets it needs: here, none that decrypts, signs or mints
    anything (the gateway has just these); each service's subclass adds its own key.
    """

    model_config = SettingsConfigDict(env_prefix="DMP_", extra="ignore")

    # Secrets whose published development value is refused unless env is dev.
    published_secrets: ClassVar[dict[str, str]] = {"log_pseudonym_key": DEV_LOG_PSEUDONYM_KEY}
    # Settings that hold a key: base64 of exactly 32 bytes.
    key_settings: ClassVar[tuple[str, ...]] = ("log_pseudonym_key",)

    env: Env = Env.PROD
    log_level: str = "INFO"

    # Credentials (user, password), database and TLS options go in the URL: for example
    # mongodb://dossier:PASSWORD@mongo:27017/dossier?authSource=dossier&tls=true&tlsCAFile=/ca.pem
    mongo_url: str = "mongodb://localhost:27017/"
    mongo_db: str = ""
    mongo_timeout_ms: int = 3000
    # Several replicas of a service writing to one FerretDB: each change of a record also takes
    # a lease in the database (dmp_kit.mongo.DocumentLocks), since FerretDB's compare-and-set is
    # not atomic between clients. Not needed on MongoDB, nor with one replica.
    document_leases: bool = False

    nats_url: str = "nats://localhost:4222"
    # Copies of each JetStream stream: 1 on a single server, 3 on a production cluster.
    nats_stream_replicas: int = 1
    # Days an event stays in its stream (0: for ever); see docs/scaling.md.
    nats_stream_max_age_days: float = 0.0
    # This service's own NATS identity: the server grants it its subjects only.
    nats_user: str = ""
    nats_password: SecretStr = SecretStr("")
    # TLS to NATS: a CA file to verify the server (or the system's CAs with tls:// URLs), and
    # a client certificate and key when the server asks for one.
    nats_tls_ca: str = ""
    nats_tls_cert: str = ""
    nats_tls_key: str = ""

    identity_addr: str = f"localhost:{DEFAULT_PORTS['identity']}"
    dossier_addr: str = f"localhost:{DEFAULT_PORTS['dossier']}"
    consent_addr: str = f"localhost:{DEFAULT_PORTS['consent']}"
    audit_addr: str = f"localhost:{DEFAULT_PORTS['audit']}"
    notify_addr: str = f"localhost:{DEFAULT_PORTS['notify']}"
    ingest_addr: str = f"localhost:{DEFAULT_PORTS['ingest']}"
    messaging_addr: str = f"localhost:{DEFAULT_PORTS['messaging']}"
    agenda_addr: str = f"localhost:{DEFAULT_PORTS['agenda']}"
    grpc_listen: str = ""
    # Where the process serves its Prometheus metrics (/metrics): host:port, or "off". Empty:
    # every interface, on the gRPC port + METRICS_PORT_OFFSET (identity 51051 …).
    metrics_listen: str = ""
    grpc_deadline_seconds: float = 5.0
    shutdown_grace_seconds: float = 10.0
    # How long patient data kept in a process's memory (a content key, listings decoded,
    # consent's state, a rendered resource) lives at most: every such cache is emptied this
    # often, so that a dossier purged by one replica leaves the others' memory (dmp_kit.forget).
    patient_data_held_seconds: float = Field(default=300.0, gt=0)

    jwt_issuer: str = "https://dmp.localhost/identity"
    jwt_audience: str = "dmp"

    # base64 of 32 bytes, the same in every process: keys the pseudonyms in logs, so that one
    # person has one pseudonym across services. It decrypts and signs nothing.
    log_pseudonym_key: SecretStr = SecretStr(DEV_LOG_PSEUDONYM_KEY)

    # dev/test only: a file holding a number of seconds added to the wall clock.
    clock_offset_file: str = ""

    # Benchmarks: a directory where each process keeps the count of database commands it has
    # sent, by command name and collection (<service>.json, rewritten once a second at most).
    # Empty: not kept.
    mongo_ops_dir: str = ""

    # Traces (dmp_kit.tracing): an OTLP/HTTP collector's base URL (http://collector:4318), and
    # a file where spans are appended as JSON lines (the local stack's). Both empty: no tracing.
    otlp_endpoint: str = ""
    trace_file: str = ""
    # The share of requests and events that start a recorded trace (by trace id, so that every
    # process agrees). A tenth keeps tracing's CPU within a tenth of a request's (measured:
    # all of them cost a consult a fifth more; docs/observability.md).
    trace_sample_ratio: float = Field(default=0.1, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_dev(self) -> Self:
        for name in self.key_settings:
            try:
                key = base64.b64decode(self._plain(name), validate=True)
            except ValueError as exc:
                raise ValueError(f"DMP_{name.upper()} must be base64") from exc
            if len(key) != 32:
                raise ValueError(f"DMP_{name.upper()} must encode exactly 32 bytes")
        if self.env is Env.DEV:
            return self
        for name, published in self.published_secrets.items():
            if self._plain(name) == published:
                raise DefaultSecretError(
                    f"DMP_{name.upper()} has its published development value; "
                    f"set a real secret (DMP_ENV={self.env.value} refuses it)"
                )
        for name, prefix in DEV_PASSWORD_PREFIXES.items():
            if prefix in self._plain(name):
                raise DefaultSecretError(
                    f"DMP_{name.upper()} holds a published development password; "
                    f"set a real one (DMP_ENV={self.env.value} refuses it)"
                )
        if self.clock_offset_file and self.env is Env.PROD:
            raise ValueError("DMP_CLOCK_OFFSET_FILE is for dev and test only")
        if bool(self.nats_tls_cert) != bool(self.nats_tls_key):
            raise ValueError("DMP_NATS_TLS_CERT and DMP_NATS_TLS_KEY go together")
        return self

    def _plain(self, name: str) -> str:
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    def key_bytes(self, name: str) -> bytes:
        """The 32 bytes of one of `key_settings`."""
        if name not in self.key_settings:
            raise KeyError(name)
        return base64.b64decode(self._plain(name))

    def nats_tls(self) -> ssl.SSLContext | None:
        """TLS to NATS when a CA or client certificate is configured (tls:// URLs alone use
        the system's CAs)."""
        if not (self.nats_tls_ca or self.nats_tls_cert):
            return None
        context = ssl.create_default_context(cafile=self.nats_tls_ca or None)
        if self.nats_tls_cert:
            context.load_cert_chain(self.nats_tls_cert, self.nats_tls_key)
        return context

    def listen_address(self, service: str) -> str:
        return self.grpc_listen or f"[::]:{DEFAULT_PORTS[service]}"

    def metrics_address(self, service: str) -> str:
        return self.metrics_listen or f"[::]:{DEFAULT_PORTS[service] + METRICS_PORT_OFFSET}"

    def database_name(self, service: str) -> str:
        return self.mongo_db or service
