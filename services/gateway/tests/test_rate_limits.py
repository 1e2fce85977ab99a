"""The gateway's rate limits: per address on the authentication routes, per account on them,
per address everywhere; each a 429 problem+json with Retry-After.

Identity is unreachable here (503 behind the limits): the limits are the gateway's own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dmp_gateway.app import create_app
from dmp_gateway.config import GatewaySettings
from dmp_gateway.throttle import SweptMemoryStorage, Throttle
from dmp_kit.errors import RateLimited

LOGIN = {"kind": "patient", "login": "180017512345660", "password": "whatever it is"}


def gateway(**limits: str) -> Any:
    settings = GatewaySettings(env="dev", identity_addr="127.0.0.1:1", **limits)
    return create_app(settings)


def refused(r: Any, detail: str) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/too-many-requests")
    assert detail in r.json()["detail"]
    assert 1 <= int(r.headers["retry-after"]) <= 61


def test_one_address_is_limited_on_the_authentication_routes() -> None:
    with TestClient(gateway(auth_rate_limit="3/minute")) as client:
        answers = [client.post("/v1/auth/login", json=LOGIN) for _ in range(3)]
        assert all(r.status_code == 503 for r in answers)
        r = client.post("/v1/auth/otp", json={"challenge_id": "x", "code": "123456"})
        refused(r, "from this address")
        assert client.get("/healthz").status_code == 200  # other routes are not limited
        assert client.get("/v1/me").status_code == 401


def test_one_account_is_limited_whatever_the_address() -> None:
    app = gateway(account_rate_limit="2/minute")
    for n, address in enumerate(("10.0.0.1", "10.0.0.2")):
        with TestClient(app, client=(address, 4000 + n)) as client:
            assert client.post("/v1/auth/login", json=LOGIN).status_code == 503
    with TestClient(app, client=("10.0.0.3", 4003)) as client:
        refused(
            client.post("/v1/auth/login", json=LOGIN),
            "for this account",
        )
        other = {**LOGIN, "login": "280017512345613"}
        assert client.post("/v1/auth/login", json=other).status_code == 503
        # A code challenge and a client are accounts too.
        for _ in range(2):
            assert (
                client.post(
                    "/v1/auth/otp", json={"challenge_id": "c1", "code": "123456"}
                ).status_code
                == 503
            )
        refused(
            client.post("/v1/auth/otp", json={"challenge_id": "c1", "code": "123456"}),
            "for this account",
        )


def test_every_route_is_limited_per_address_generously_and_probes_never() -> None:
    app = gateway(address_rate_limit="5/minute")
    with TestClient(app, client=("10.1.0.1", 5000)) as client:
        answers = [client.get("/v1/me") for _ in range(5)]
        assert [r.status_code for r in answers] == [401] * 5
        r = client.get("/v1/me")
        refused(r, "from this address")
        # The refusal carries the security headers like any answer.
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        for _ in range(10):
            assert client.get("/healthz").status_code == 200
    with TestClient(app, client=("10.1.0.2", 5001)) as client:
        assert client.get("/v1/me").status_code == 401  # another address has its own count


async def test_expired_entries_are_swept_once_a_second_and_never_count() -> None:
    """The storage's sweep runs at most once a second however many hits (the library's would
    run after each), still frees what expired, and a window's entries count until they do."""
    throttle = Throttle("5/second", "test", "too many")
    storage = throttle.storage
    for i in range(5):
        await throttle.check(f"key-{i}")
    for _ in range(4):
        await throttle.check("key-0")
    with pytest.raises(RateLimited):
        await throttle.check("key-0")  # its sixth hit within the second
    assert storage.sweeps == 1, "one sweep for ten hits"
    await asyncio.sleep(SweptMemoryStorage.SWEEP_SECONDS + 0.1)
    await throttle.check("key-0")  # the window passed: counted again, and a sweep is due
    assert storage.sweeps == 2
    for _ in range(50):
        await asyncio.sleep(0.02)
        if set(storage.events) == {"LIMITER/test/key-0/5/1/second"}:
            break
    assert set(storage.events) == {"LIMITER/test/key-0/5/1/second"}, storage.events.keys()
