"""Verifying identity's access tokens: JWKS (cached, refreshed on unknown kid), aud, typ, roles."""

from __future__ import annotations

import asyncio
import json
import re
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
from dmp_kit.logging import get_logger

log = get_logger(__name__)

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a media type (RFC 9068), not a secret
ALGORITHM = "EdDSA"
KINDS = frozenset({"patient", "professional", "agent", "admin", "system", "service"})
# A system client's id starts with a letter: it can never be an RPPS (11 digits) nor an INS (15
# characters, the first a digit), so a system never acts under a person's identifier.
CLIENT_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._:-]{2,127}$")


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
    # the directory's mode of practice (liberal, salaried, mixed), as a CPS login says it
    practice: str = ""
    client_id: str = ""
    # An app the patient connected (OAuth 2.0, docs/connected-apps.md): its client id and name,
    # the scopes the patient granted it and the connection its token stands for. Its token is
    # the patient's, narrowed: the gateway lets it call only what those scopes name, consent
    # lets it act on the patient's own space only.
    app: str = ""
    app_name: str = ""
    scopes: frozenset[str] = frozenset()
    connection: str = ""
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
        if kind == "system" and (
            not CLIENT_ID_RE.match(str(claims.get("client_id", "")))
            or claims.get("ins")
            or claims.get("rpps")
        ):
            raise Unauthenticated(
                "a system's token names its client and no person", slug="invalid-token"
            )
        app = str(claims.get("app", ""))
        if app and (kind != "patient" or not claims.get("ins") or not claims.get("cid")):
            raise Unauthenticated(
                "an app's token names its patient and its connection", slug="invalid-token"
            )
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise Unauthenticated("the token's scope is malformed", slug="invalid-token")
        return cls(
            kind=str(kind),
            subject=str(claims["sub"]),
            roles=frozenset(roles),
            ins=str(claims.get("ins", "")),
            rpps=str(claims.get("rpps", "")),
            profession=str(claims.get("profession", "")),
            specialty=str(claims.get("specialty", "")),
            practice=str(claims.get("practice", "")),
            client_id=str(claims.get("client_id", "")),
            app=app,
            app_name=str(claims.get("app_name", "")) if app else "",
            scopes=frozenset(scope.split()) if app else frozenset(),
            connection=str(claims.get("cid", "")) if app else "",
            expires_at=float(claims["exp"]),
            token=token,
        )


def public_key_from_jwk(jwk: Mapping[str, str]) -> Ed25519PublicKey:
    key = OKPAlgorithm.from_jwk(json.dumps(dict(jwk)))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("only Ed25519 public keys are accepted")
    return key


KeyFetcher = Callable[[], Awaitable[Iterable[Mapping[str, str]]]]

# How old a verifier's copy of the JWKS may grow before it is read again (at the next token).
JWKS_REFRESH_SECONDS = 10.0
# A copy older than this is never used, even when identity does not answer: the bound within
# which a key withdrawn from the JWKS (revoked) is refused by every verifier, and how long
# identity publishes a key before it signs with it (docs/signing-keys.md).
JWKS_MAX_AGE_SECONDS = 30.0


class JwksCache:
    """Public keys by kid: read again when the copy is older than `refresh_after`, and when an
    unknown kid shows up (not more than once per `min_refresh_interval`)."""

    def __init__(
        self,
        fetch: KeyFetcher,
        min_refresh_interval: float = 5.0,
        *,
        refresh_after: float = JWKS_REFRESH_SECONDS,
        max_age: float = JWKS_MAX_AGE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at = float("-inf")
        self._tried_at = float("-inf")
        self._min_interval = min_refresh_interval
        self._refresh_after = refresh_after
        self._max_age = max_age
        self._monotonic = monotonic
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> Ed25519PublicKey | None:
        if kid not in self._keys or self._age() >= self._refresh_after:
            async with self._lock:
                await self._refresh_if_due(kid)
        return self._keys.get(kid)

    def _age(self) -> float:
        return self._monotonic() - self._fetched_at

    async def _refresh_if_due(self, kid: str) -> None:
        stale = self._age() >= self._refresh_after
        if not stale and kid in self._keys:
            return  # refreshed by the caller this one waited for
        # Unknown kids may be invented: they cannot make identity be asked more often than this.
        if self._monotonic() - self._tried_at >= self._min_interval:
            self._tried_at = self._monotonic()
            try:
                await self.refresh()
            except Exception:
                # Identity away: a copy younger than max_age serves meanwhile; none older does.
                if not stale or self._age() >= self._max_age:
                    self._drop_if_too_old()
                    raise
                log.warning("jwks_refresh_failed", age_seconds=round(self._age(), 1))
        self._drop_if_too_old()

    def _drop_if_too_old(self) -> None:
        if self._age() >= self._max_age:
            self._keys = {}

    async def refresh(self) -> None:
        jwks = await self._fetch()
        self._keys = {
            k["kid"]: public_key_from_jwk(k) for k in jwks if k.get("kty") == "OKP" and k.get("kid")
        }
        self._fetched_at = self._monotonic()


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
        # token → (the kid that signed it, who it is, its nbf claim if any)
        self._cache: OrderedDict[str, tuple[str, Principal, Any]] = OrderedDict()
        self._cache_size = cache_size

    async def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            kid, principal, nbf = cached
            # A key that left the JWKS (revoked) ends the tokens it signed, verified or not.
            if await self._keys.key(kid) is None:
                del self._cache[token]
                raise Unauthenticated(
                    "the token was signed by an unknown key", slug="invalid-token"
                )
            # Both bounds again: a clock moved back can put a token seen before out of range.
            self._check_time(principal.expires_at, nbf)
            self._cache.move_to_end(token)
            return principal
        kid, principal, nbf = await self._verify_uncached(token)
        self._cache[token] = (kid, principal, nbf)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    async def _verify_uncached(self, token: str) -> tuple[str, Principal, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is not a JWT", slug="invalid-token") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("the token's algorithm is not accepted", slug="invalid-token")
        if header.get("typ") != ACCESS_TOKEN_TYP:
            raise Unauthenticated("this is not an access token", slug="invalid-token")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthenticated("the token names no signing key", slug="invalid-token")
        key = await self._keys.key(kid)
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
        nbf = claims.get("nbf")
        self._check_time(float(claims["exp"]), nbf)
        return kid, Principal.from_claims(claims, token), nbf

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
