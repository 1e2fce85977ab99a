"""The dev-only outbox route does not exist outside dev mode."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from dmp_gateway.app import create_app
from dmp_gateway.config import GatewaySettings


@pytest.mark.parametrize("env", ["prod", "test"])
def test_dev_outbox_is_absent_outside_dev(env: str) -> None:
    settings = GatewaySettings(env=env, log_pseudonym_key=base64.b64encode(b"k" * 32).decode())
    app = create_app(settings)
    assert "/dev/outbox" not in app.openapi()["paths"]
    with TestClient(app) as client:
        r = client.get("/dev/outbox", params={"to": "admin@dmp.localhost"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_dev_outbox_exists_in_dev() -> None:
    app = create_app(GatewaySettings(env="dev"))
    assert "/dev/outbox" in app.openapi()["paths"]
