"""Identity's settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from dmp_kit.config import DEV_ADMIN_PASSWORD, DEV_MASTER_KEY, Env, Settings


class IdentitySettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        "master_key": DEV_MASTER_KEY,
        "bootstrap_admin_password": DEV_ADMIN_PASSWORD,
    }

    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    service_token_ttl_seconds: int = 300
    otp_ttl_seconds: int = 300
    max_password_failures: int = 10
    max_otp_failures: int = 5
    lock_base_seconds: int = 60
    lock_max_seconds: int = 24 * 3600
    # Where the gateway is reached from outside; client assertions are addressed to
    # f"{public_base_url}/v1/auth/token" (RFC 7523 §3) or to the issuer.
    public_base_url: str = "http://localhost:8000"
    # Empty: no administrator is created at start (outside dev).
    bootstrap_admin_password: SecretStr = SecretStr("")
    bootstrap_admin_email: str = "admin@dmp.localhost"

    def admin_password(self) -> str:
        configured = self.bootstrap_admin_password.get_secret_value()
        if not configured and self.env is Env.DEV:
            return DEV_ADMIN_PASSWORD
        return configured
