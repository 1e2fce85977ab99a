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
        self.away = False

    async def fetch(self) -> Iterable[Mapping[str, str]]:
        self.fetches += 1
        if self.away:
            raise ConnectionError("identity is away")
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


async def test_not_before_follows_the_injected_clock_even_when_cached(setup: Any) -> None:
    """A clock moved back (stepped, or another replica's) puts a token seen before out of its
    validity again: the cache does not vouch for it."""
    _, key, verifier, clock = setup
    token = sign(key, "k1", claims(nbf=int(NOW.timestamp())))
    await verifier.verify(token)
    clock.advance(timedelta(minutes=-5))
    with pytest.raises(Unauthenticated, match="not valid yet"):
        await verifier.verify(token)
    clock.advance(timedelta(minutes=5))
    assert (await verifier.verify(token)).subject == "acc-1"


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


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_that_left_the_jwks_is_refused_within_the_refresh_bound() -> None:
    """Revocation: the key leaves the JWKS; a token it signed, even one verified (and
    remembered) before, is refused once the copy of the key set is older than the bound."""
    keys, ticks = Keys(), Ticks()
    key = Ed25519PrivateKey.generate()
    keys.published.append(jwk(key, "k1"))
    cache = JwksCache(keys.fetch, refresh_after=10, max_age=30, monotonic=ticks)
    verifier = TokenVerifier(cache, issuer=ISS, audience=AUD, clock=ManualClock(NOW))
    token = sign(key, "k1", claims())
    assert await verifier.verify(token)
    keys.published.clear()
    ticks.now += 9
    assert await verifier.verify(token), "within the bound, the copy in hand serves"
    ticks.now += 1
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.verify(token)
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.verify(sign(key, "k1", claims(sub="acc-2")))


async def test_identity_away_the_copy_serves_until_its_maximum_age_then_nothing_does() -> None:
    keys, ticks = Keys(), Ticks()
    key = Ed25519PrivateKey.generate()
    keys.published.append(jwk(key, "k1"))
    cache = JwksCache(keys.fetch, refresh_after=10, max_age=30, monotonic=ticks)
    verifier = TokenVerifier(cache, issuer=ISS, audience=AUD, clock=ManualClock(NOW))
    token = sign(key, "k1", claims())
    assert await verifier.verify(token)
    keys.away = True
    ticks.now += 20
    assert await verifier.verify(token), "a refresh failed: the 20 s old copy still serves"
    ticks.now += 10
    with pytest.raises(ConnectionError):
        await verifier.verify(token)
    with pytest.raises(Unauthenticated):
        await verifier.verify(token)  # no second try within the rate limit, and no keys
    keys.away = False
    ticks.now += 5
    assert await verifier.verify(token), "identity back: the keys are read again"


async def test_keys_are_read_again_when_the_copy_is_old() -> None:
    keys, ticks = Keys(), Ticks()
    key = Ed25519PrivateKey.generate()
    keys.published.append(jwk(key, "k1"))
    cache = JwksCache(keys.fetch, refresh_after=10, max_age=30, monotonic=ticks)
    assert await cache.key("k1") is not None
    assert await cache.key("k1") is not None
    assert keys.fetches == 1
    ticks.now += 10
    assert await cache.key("k1") is not None
    assert keys.fetches == 2


@pytest.mark.parametrize(
    "identity",
    [
        pytest.param({"client_id": "10000000009"}, id="client-id-an-rpps"),
        pytest.param({"client_id": "180017512345660"}, id="client-id-an-ins"),
        pytest.param({"client_id": ""}, id="no-client-id"),
        pytest.param({"client_id": "insurer-1", "rpps": "10000000009"}, id="names-a-person"),
    ],
)
async def test_a_system_never_acts_under_a_person_s_identifier(
    setup: Any, identity: dict[str, str]
) -> None:
    _, key, verifier, _ = setup
    body = {k: v for k, v in claims(kind="system", roles=["facility"]).items() if k != "ins"}
    with pytest.raises(Unauthenticated, match="system"):
        await verifier.verify(sign(key, "k1", {**body, **identity}))
    p = await verifier.verify(sign(key, "k1", {**body, "client_id": "insurer-1"}))
    assert p.actor_id == "insurer-1"
