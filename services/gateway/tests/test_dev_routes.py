"""The dev-only outbox route does not exist outside dev mode."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from dmp_gateway.app import create_app
from dmp_gateway.config import GatewaySettings


@pytest.mark.parametrize("env", ["prod", "test"])
def test_dev_outbox_is_absent_outside_dev(env: str) -> None:
    settings = GatewaySettings(env=env, master_key=base64.b64encode(b"k" * 32).decode())
    app = create_app(settings)
    assert "/dev/outbox" not in app.openapi()["paths"]
    with TestClient(app) as client:
        r = client.get("/dev/outbox", params={"to": "admin@dmp.localhost"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_dev_outbox_exists_in_dev() -> None:
    app = create_app(GatewaySettings(env="dev"))
    assert "/dev/outbox" in app.openapi()["paths"]


def test_one_address_is_limited_on_the_authentication_routes() -> None:
    settings = GatewaySettings(env="dev", auth_rate_limit="3/minute", identity_addr="127.0.0.1:1")
    body = {"kind": "patient", "login": "180017512345660", "password": "whatever it is"}
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/v1/auth/login", json=body) for _ in range(3)]
        assert all(r.status_code != 429 for r in answers)  # identity is unreachable here: 503
        r = client.post("/v1/auth/otp", json={"challenge_id": "x", "code": "123456"})
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/too-many-requests")
        assert 1 <= int(r.headers["retry-after"]) <= 61
        assert client.get("/healthz").status_code == 200  # other routes are not limited
