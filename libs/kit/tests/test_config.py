"""The settings guard: published development secrets are refused outside dev."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from dmp_kit.config import DEV_MASTER_KEY, Settings

REAL_KEY = base64.b64encode(b"k" * 32).decode()


def test_dev_accepts_published_secrets() -> None:
    assert Settings(env="dev").master_key.get_secret_value() == DEV_MASTER_KEY


@pytest.mark.parametrize("env", ["test", "prod"])
def test_outside_dev_the_published_master_key_is_refused(env: str) -> None:
    with pytest.raises(ValidationError, match="DMP_MASTER_KEY"):
        Settings(env=env)


def test_prod_is_the_default_and_accepts_a_real_key() -> None:
    settings = Settings(master_key=REAL_KEY)
    assert settings.env.value == "prod"
    assert settings.master_key_bytes == b"k" * 32


def test_master_key_must_be_32_bytes() -> None:
    with pytest.raises(ValidationError, match="32 bytes"):
        Settings(env="prod", master_key=base64.b64encode(b"short").decode())


def test_clock_offset_is_refused_in_prod() -> None:
    with pytest.raises(ValidationError, match="CLOCK_OFFSET"):
        Settings(env="prod", master_key=REAL_KEY, clock_offset_file="clock-offset")


def test_environment_variables_are_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMP_ENV", "dev")
    monkeypatch.setenv("DMP_NATS_URL", "nats://example:4222")
    assert Settings().nats_url == "nats://example:4222"
