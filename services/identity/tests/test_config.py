"""Identity's settings: the bootstrap administrator's password is a guarded secret."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from dmp_identity.config import IdentitySettings

REAL_KEY = base64.b64encode(b"k" * 32).decode()


def test_bootstrap_password_published_value_refused_outside_dev() -> None:
    with pytest.raises(ValidationError, match="DMP_BOOTSTRAP_ADMIN_PASSWORD"):
        IdentitySettings(
            env="prod", master_key=REAL_KEY, bootstrap_admin_password="dev-admin-password"
        )
    unset = IdentitySettings(env="prod", master_key=REAL_KEY)
    assert unset.admin_password() == ""
    assert IdentitySettings(env="dev").admin_password() == "dev-admin-password"
