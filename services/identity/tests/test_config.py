"""Identity's settings: the bootstrap administrator's password is a guarded secret."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from dmp_identity.config import IdentitySettings
from dmp_kit.service_auth import DEV_SERVICE_PUBLIC_KEYS

REAL_KEY = base64.b64encode(b"k" * 32).decode()


def test_bootstrap_password_published_value_refused_outside_dev() -> None:
    keys = {"identity_key": REAL_KEY, "log_pseudonym_key": REAL_KEY}
    with pytest.raises(ValidationError, match="DMP_BOOTSTRAP_ADMIN_PASSWORD"):
        IdentitySettings(env="prod", bootstrap_admin_password="dev-admin-password", **keys)
    unset = IdentitySettings(env="prod", **keys)
    assert unset.admin_password() == ""
    assert IdentitySettings(env="dev").admin_password() == "dev-admin-password"


def test_its_own_key_and_the_service_accounts_published_keys_are_refused_outside_dev() -> None:
    with pytest.raises(ValidationError, match="DMP_IDENTITY_KEY"):
        IdentitySettings(env="prod", log_pseudonym_key=REAL_KEY)
    published = {"notify": DEV_SERVICE_PUBLIC_KEYS["notify"]}
    with pytest.raises(ValidationError, match="development key"):
        IdentitySettings(
            env="prod",
            identity_key=REAL_KEY,
            log_pseudonym_key=REAL_KEY,
            service_public_keys=published,
        )
    # Outside dev, only the accounts configured can authenticate.
    settings = IdentitySettings(env="prod", identity_key=REAL_KEY, log_pseudonym_key=REAL_KEY)
    assert settings.service_public_key("notify") is None
    assert IdentitySettings(env="dev").service_public_key("notify") == published["notify"]
