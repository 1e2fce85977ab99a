"""The settings guard: published development secrets are refused outside dev."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from dmp_kit.config import DEV_LOG_PSEUDONYM_KEY, Settings

REAL_KEY = base64.b64encode(b"k" * 32).decode()


def test_dev_accepts_published_secrets() -> None:
    assert Settings(env="dev").log_pseudonym_key.get_secret_value() == DEV_LOG_PSEUDONYM_KEY


@pytest.mark.parametrize("env", ["test", "prod"])
def test_outside_dev_the_published_key_is_refused(env: str) -> None:
    with pytest.raises(ValidationError, match="DMP_LOG_PSEUDONYM_KEY"):
        Settings(env=env)


def test_prod_is_the_default_and_accepts_a_real_key() -> None:
    settings = Settings(log_pseudonym_key=REAL_KEY)
    assert settings.env.value == "prod"
    assert settings.key_bytes("log_pseudonym_key") == b"k" * 32


def test_keys_must_be_32_bytes_of_base64() -> None:
    with pytest.raises(ValidationError, match="32 bytes"):
        Settings(env="prod", log_pseudonym_key=base64.b64encode(b"short").decode())
    with pytest.raises(ValidationError, match="base64"):
        Settings(env="dev", log_pseudonym_key="not base64!")


def test_the_shared_settings_hold_no_key_that_decrypts_signs_or_mints() -> None:
    """What every process (the gateway included) reads: nothing but the log pseudonym key."""
    assert Settings.key_settings == ("log_pseudonym_key",)
    secret_like = {name for name in Settings.model_fields if "key" in name or "password" in name}
    assert secret_like == {"log_pseudonym_key", "nats_password", "nats_tls_key"}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("nats_password", "dev-nats-dossier"),
        ("mongo_url", "mongodb://dossier:dev-mongo-dossier@mongo:27017/"),
    ],
)
def test_outside_dev_the_published_dev_passwords_are_refused(setting: str, value: str) -> None:
    """Those of the Kubernetes dev overlay, in case its Secrets reach another cluster."""
    with pytest.raises(ValidationError, match=f"DMP_{setting.upper()}"):
        Settings(env="prod", log_pseudonym_key=REAL_KEY, **{setting: value})
    assert Settings(env="dev", **{setting: value})


def test_clock_offset_is_refused_in_prod() -> None:
    with pytest.raises(ValidationError, match="CLOCK_OFFSET"):
        Settings(env="prod", log_pseudonym_key=REAL_KEY, clock_offset_file="clock-offset")


def test_nats_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValidationError, match="DMP_NATS_TLS_KEY"):
        Settings(env="prod", log_pseudonym_key=REAL_KEY, nats_tls_cert="/etc/dmp/nats.crt")
    assert Settings(env="dev").nats_tls() is None


def test_environment_variables_are_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMP_ENV", "dev")
    monkeypatch.setenv("DMP_NATS_URL", "nats://example:4222")
    monkeypatch.setenv("DMP_NATS_USER", "dossier")
    monkeypatch.setenv("DMP_NATS_PASSWORD", "from-a-secret")
    settings = Settings()
    assert settings.nats_url == "nats://example:4222"
    assert settings.nats_user == "dossier"
    assert settings.nats_password.get_secret_value() == "from-a-secret"
