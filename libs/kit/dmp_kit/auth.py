"""Verifying identity's access tokens: JWKS (cached, refreshed on unknown kid), aud, typ, roles."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from dmp_kit.clock import Clock
from dmp_kit.errors import PermissionDenied, Unauthenticated

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a media type (RFC 9068), not a secret
ALGORITHM = "EdDSA"
KINDS = frozenset({"patient", "professional", "agent", "admin", "system", "service"})


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the access token says."""

    kind: str
    subject: str
    roles: frozenset[str] = frozenset()
    ins: str = ""
    rpps: str = ""
    profession: str = ""
    specialty: str = ""
    client_id: str = ""
    expires_at: float = 0.0
    token: str = field(default="", repr=False)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def require_role(self, *roles: str) -> None:
        if not self.roles.intersection(roles):
            raise PermissionDenied(f"this needs one of the roles: {', '.join(roles)}")

    def require_kind(self, *kinds: str) -> None:
        if self.kind not in kinds:
            raise PermissionDenied(f"this is for: {', '.join(kinds)}")

    @property
    def actor_id(self) -> str:
        """The identifier other services know this caller by."""
        return self.ins or self.rpps or self.client_id or self.subject

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], token: str) -> Principal:
        kind = claims.get("kind")
        if kind not in KINDS:
            raise Unauthenticated("the token names no known kind of caller", slug="invalid-token")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("the token's roles are malformed", slug="invalid-token")
        return cls(
            kind=str(kind),
            subject=str(claims["sub"]),
            roles=frozenset(roles),
            ins=str(claims.get("ins", "")),
            rpps=str(claims.get("rpps", "")),
            profession=str(claims.get("profession", "")),
            specialty=str(claims.get("specialty", "")),
            client_id=str(claims.get("client_id", "")),
            expires_at=float(claims["exp"]),
            token=token,
        )


def public_key_from_jwk(jwk: Mapping[str, str]) -> Ed25519PublicKey:
    key = OKPAlgorithm.from_jwk(json.dumps(dict(jwk)))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("only Ed25519 public keys are accepted")
    return key


KeyFetcher = Callable[[], Awaitable[Iterable[Mapping[str, str]]]]


class JwksCache:
    """Public keys by kid, fetched once and again only when an unknown kid shows up."""

    def __init__(self, fetch: KeyFetcher, min_refresh_interval: float = 5.0) -> None:
        self._fetch = fetch
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._last_refresh = float("-inf")
        self._min_interval = min_refresh_interval
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> Ed25519PublicKey | None:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            # An unknown kid may mean a rotation: refresh, but not more than once per interval
            # so that tokens with invented kids cannot hammer identity.
            if (
                kid not in self._keys
                and time.monotonic() - self._last_refresh >= self._min_interval
            ):
                await self.refresh()
        return self._keys.get(kid)

    async def refresh(self) -> None:
        jwks = await self._fetch()
        self._keys = {
            k["kid"]: public_key_from_jwk(k) for k in jwks if k.get("kty") == "OKP" and k.get("kid")
        }
        self._last_refresh = time.monotonic()


class TokenVerifier:
    """Turns a bearer token into a Principal, or raises Unauthenticated."""

    def __init__(
        self,
        keys: JwksCache,
        *,
        issuer: str,
        audience: str,
        clock: Clock,
        leeway_seconds: int = 30,
        cache_size: int = 10_000,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._leeway = leeway_seconds
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size

    async def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            self._check_time(cached.expires_at, None)
            self._cache.move_to_end(token)
            return cached
        principal = await self._verify_uncached(token)
        self._cache[token] = principal
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    async def _verify_uncached(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is not a JWT", slug="invalid-token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("the token's algorithm is not accepted", slug="invalid-token")
        if header.get("typ") != ACCESS_TOKEN_TYP:
            raise Unauthenticated("this is not an access token", slug="invalid-token")
        kid = header.get("kid")
        key = await self._keys.key(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated("the token was signed by an unknown key", slug="invalid-token")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                # Time is checked below against the injected clock.
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "iss", "aud", "sub"],
                },
            )
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(
                "the token is for another audience", slug="invalid-token"
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is invalid", slug="invalid-token") from exc
        self._check_time(float(claims["exp"]), claims.get("nbf"))
        return Principal.from_claims(claims, token)

    def _check_time(self, exp: float, nbf: Any) -> None:
        now = self._clock.now().timestamp()
        if now > exp + self._leeway:
            raise Unauthenticated("the token has expired", slug="token-expired")
        if isinstance(nbf, int | float) and now + self._leeway < nbf:
            raise Unauthenticated("the token is not valid yet", slug="invalid-token")


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("a bearer token is required")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("a bearer token is required")
    return token.strip()


current_principal: ContextVar[Principal | None] = ContextVar("dmp_principal", default=None)


def caller() -> Principal:
    """The authenticated caller of the current RPC (set by the auth interceptor)."""
    principal = current_principal.get()
    if principal is None:
        raise Unauthenticated("authentication required")
    return principal
