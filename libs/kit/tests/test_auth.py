"""Token verification: signature, algorithm, typ, audience, issuer, expiry, key refresh."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dmp_kit.auth import JwksCache, Principal, TokenVerifier, bearer_token
from dmp_kit.clock import ManualClock
from dmp_kit.errors import PermissionDenied, Unauthenticated

ISS, AUD = "https://dmp.test/identity", "dmp"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def jwk(key: Ed25519PrivateKey, kid: str) -> dict[str, str]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"}


class Keys:
    def __init__(self) -> None:
        self.published: list[dict[str, str]] = []
        self.fetches = 0

    async def fetch(self) -> Iterable[Mapping[str, str]]:
        self.fetches += 1
        return list(self.published)


def claims(**over: Any) -> dict[str, Any]:
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": "acc-1",
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(minutes=15)).timestamp()),
        "kind": "patient",
        "roles": ["patient"],
        "ins": "180017512345660",
    }
    return {**base, **over}


def sign(key: Ed25519PrivateKey, kid: str, body: dict[str, Any], typ: str = "at+jwt") -> str:
    return jwt.encode(body, key, algorithm="EdDSA", headers={"kid": kid, "typ": typ})


@pytest.fixture
def setup() -> tuple[Keys, Ed25519PrivateKey, TokenVerifier, ManualClock]:
    keys = Keys()
    key = Ed25519PrivateKey.generate()
    keys.published.append(jwk(key, "k1"))
    clock = ManualClock(NOW)
    cache = JwksCache(keys.fetch, min_refresh_interval=0.0)
    return keys, key, TokenVerifier(cache, issuer=ISS, audience=AUD, clock=clock), clock


async def test_valid_token_gives_a_typed_principal(setup: Any) -> None:
    _, key, verifier, _ = setup
    p = await verifier.verify(sign(key, "k1", claims()))
    assert isinstance(p, Principal)
    assert (p.kind, p.subject, p.ins, p.roles) == (
        "patient",
        "acc-1",
        "180017512345660",
        frozenset({"patient"}),
    )
    assert p.actor_id == "180017512345660"
    with pytest.raises(PermissionDenied):
        p.require_role("admin")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda k, c: sign(k, "k1", c(aud="other")), id="wrong-audience"),
        pytest.param(lambda k, c: sign(k, "k1", c(iss="https://evil")), id="wrong-issuer"),
        pytest.param(lambda k, c: sign(k, "k1", c(), typ="JWT"), id="wrong-typ"),
        pytest.param(lambda k, c: sign(k, "k1", c(), typ="refresh+jwt"), id="refresh-typ"),
        pytest.param(lambda k, c: sign(Ed25519PrivateKey.generate(), "k1", c()), id="foreign-key"),
        pytest.param(lambda k, c: sign(k, "unknown", c()), id="unknown-kid"),
        pytest.param(lambda k, c: sign(k, "k1", c(kind="wizard")), id="unknown-kind"),
        pytest.param(
            lambda k, c: sign(k, "k1", {x: v for x, v in c().items() if x != "exp"}), id="no-exp"
        ),
        pytest.param(
            lambda k, c: jwt.encode(
                c(),
                "secret-secret-secret-secret-1234",
                algorithm="HS256",
                headers={"kid": "k1", "typ": "at+jwt"},
            ),
            id="hs256",
        ),
        pytest.param(lambda k, c: "not-a-jwt", id="garbage"),
    ],
)
async def test_refused_tokens(setup: Any, mutate: Any) -> None:
    _, key, verifier, _ = setup
    with pytest.raises(Unauthenticated):
        await verifier.verify(mutate(key, claims))


async def test_alg_none_is_refused(setup: Any) -> None:
    _, _, verifier, _ = setup
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "none", "typ": "at+jwt", "kid": "k1"}).encode()
    )
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode())
    with pytest.raises(Unauthenticated, match="algorithm"):
        await verifier.verify(f"{header.decode().rstrip('=')}.{body.decode().rstrip('=')}.")


async def test_tampered_payload_is_refused(setup: Any) -> None:
    _, key, verifier, _ = setup
    head, _, sig = sign(key, "k1", claims()).split(".")
    forged = (
        base64.urlsafe_b64encode(json.dumps(claims(roles=["admin"])).encode()).decode().rstrip("=")
    )
    with pytest.raises(Unauthenticated):
        await verifier.verify(f"{head}.{forged}.{sig}")


async def test_expiry_follows_the_injected_clock_even_when_cached(setup: Any) -> None:
    _, key, verifier, clock = setup
    token = sign(key, "k1", claims())
    await verifier.verify(token)
    clock.advance(timedelta(minutes=16))
    with pytest.raises(Unauthenticated, match="expired"):
        await verifier.verify(token)


async def test_unknown_kid_refreshes_the_keys_once(setup: Any) -> None:
    keys, _, verifier, _ = setup
    rotated = Ed25519PrivateKey.generate()
    keys.published.append(jwk(rotated, "k2"))
    assert await verifier.verify(sign(rotated, "k2", claims()))
    fetches = keys.fetches
    assert await verifier.verify(sign(rotated, "k2", claims(sub="acc-2")))
    assert keys.fetches == fetches, "a known kid must not trigger a refresh"


async def test_refresh_is_rate_limited_for_invented_kids() -> None:
    keys = Keys()
    cache = JwksCache(keys.fetch, min_refresh_interval=60.0)
    verifier = TokenVerifier(cache, issuer=ISS, audience=AUD, clock=ManualClock(NOW))
    key = Ed25519PrivateKey.generate()
    for i in range(5):
        with pytest.raises(Unauthenticated):
            await verifier.verify(sign(key, f"invented-{i}", claims()))
    assert keys.fetches == 1


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "bearer"])
def test_bearer_token_requires_a_bearer(header: str | None) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(header)
    assert bearer_token("Bearer abc") == "abc"
