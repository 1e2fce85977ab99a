"""CORS: closed unless configured, and then open to the configured origins only."""

from __future__ import annotations

from fastapi.testclient import TestClient

from dmp_gateway.app import create_app
from dmp_gateway.config import GatewaySettings

PREFLIGHT = {
    "access-control-request-method": "GET",
    "access-control-request-headers": "authorization",
}


def test_no_origin_is_allowed_by_default() -> None:
    with TestClient(create_app(GatewaySettings(env="dev"))) as client:
        r = client.options("/v1/me", headers={"origin": "https://portal.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in r.headers


def test_configured_origins_and_only_them() -> None:
    settings = GatewaySettings(env="dev", cors_origins="https://portal.example, https://b.example")
    with TestClient(create_app(settings)) as client:
        r = client.options("/v1/me", headers={"origin": "https://portal.example", **PREFLIGHT})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://portal.example"
        assert "access-control-allow-credentials" not in r.headers
        r = client.options("/v1/me", headers={"origin": "https://evil.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in r.headers
        r = client.get("/healthz", headers={"origin": "https://b.example"})
        assert r.headers["access-control-allow-origin"] == "https://b.example"
