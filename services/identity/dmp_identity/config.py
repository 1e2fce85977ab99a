"""Identity's settings."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator

from dmp_kit.config import DEV_ADMIN_PASSWORD, DefaultSecretError, Env, Settings, dev_key
from dmp_kit.service_auth import DEV_SERVICE_PUBLIC_KEYS, SERVICE_ROLES

DEV_IDENTITY_KEY = dev_key("identity")


class IdentitySettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "identity_key": DEV_IDENTITY_KEY,
        "bootstrap_admin_password": DEV_ADMIN_PASSWORD,
    }
    key_settings: ClassVar[tuple[str, ...]] = (*Settings.key_settings, "identity_key")

    # Identity's own secret (base64 of 32 bytes): seals its signing keys at rest and keys
    # the digests it keeps of codes and tokens. No other process holds it.
    identity_key: SecretStr = SecretStr(DEV_IDENTITY_KEY)
    # The public halves of the service accounts' keys (dmp_kit.service_auth), as JSON:
    # {"notify": "<base64 of 32 bytes>", ...}. Empty in dev: the published development keys.
    service_public_keys: dict[str, str] = {}  # noqa: RUF012 - pydantic copies defaults

    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    # A login's absolute lifetime: refreshing never carries a session past it.
    session_max_seconds: int = 30 * 24 * 3600
    service_token_ttl_seconds: int = 300
    # The apps a patient connects (docs/connected-apps.md): their access tokens are short, as
    # a connection ended must end their access soon even where it is not checked; their
    # refresh tokens rotate at each use and lapse after this long unused.
    app_access_token_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    app_refresh_token_ttl_seconds: int = Field(default=90 * 24 * 3600, ge=3600)
    otp_ttl_seconds: int = 300
    max_password_failures: int = 10
    max_otp_failures: int = 5
    # How long the person has to activate or oppose an account the insurer's directory
    # created; past it, the account is active by itself (the legal delay: 6 weeks).
    activation_delay_days: int = 42
    # How long before a minor's majority the minor and their legal representatives are told
    # that the representation ends (it ends on the 18th birthday, on the injected clock).
    representation_notice_days: int = Field(default=30, ge=0)
    # How often the scheduled rules (the end of legal representation at majority) run.
    schedule_interval_seconds: float = 60.0
    lock_base_seconds: int = 60
    lock_max_seconds: int = 24 * 3600
    # Where the gateway is reached from outside; client assertions are addressed to
    # f"{public_base_url}/v1/auth/token" (RFC 7523 §3) or to the issuer.
    public_base_url: str = "http://localhost:8000"
    # Empty: no administrator is created at start (outside dev).
    bootstrap_admin_password: SecretStr = SecretStr("")
    bootstrap_admin_email: str = "admin@dmp.localhost"

    @model_validator(mode="after")
    def _service_keys(self) -> Self:
        unknown = set(self.service_public_keys) - set(SERVICE_ROLES)
        if unknown:
            raise ValueError(f"DMP_SERVICE_PUBLIC_KEYS: no service account {sorted(unknown)}")
        if self.env is not Env.DEV:
            for name, key in self.service_public_keys.items():
                if DEV_SERVICE_PUBLIC_KEYS[name] == key:
                    raise DefaultSecretError(
                        f"DMP_SERVICE_PUBLIC_KEYS[{name}] is the published development key"
                    )
        return self

    @property
    def identity_key_bytes(self) -> bytes:
        return self.key_bytes("identity_key")

    def service_public_key(self, service: str) -> str | None:
        """The public key a service account authenticates with; None: that account is off."""
        if not self.service_public_keys and self.env is Env.DEV:
            return DEV_SERVICE_PUBLIC_KEYS[service]
        return self.service_public_keys.get(service)

    def admin_password(self) -> str:
        configured = self.bootstrap_admin_password.get_secret_value()
        if not configured and self.env is Env.DEV:
            return DEV_ADMIN_PASSWORD
        return configured
