"""Rate limits (the `limits` library, moving windows), in memory per gateway replica.

Three, all configurable:
- per client address, on every route but the operations ones: generous, since a hospital's
  staff share one address (`DMP_ADDRESS_RATE_LIMIT`);
- per client address, on the public authentication routes (`DMP_AUTH_RATE_LIMIT`);
- per account, on the same routes: tight, so that no one address nor many addresses together
  can hammer one account (`DMP_ACCOUNT_RATE_LIMIT`); identity's lockouts come on top.
A refusal is 429 problem+json with Retry-After.
"""

from __future__ import annotations

import hashlib
import time

import jwt
from fastapi import Request
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from dmp_kit.errors import RateLimited

# Never limited: probes and scrapes come from the platform itself.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class SweptMemoryStorage(MemoryStorage):
    """`limits`' in-memory storage, its sweep of expired entries at most once a second. The
    library starts a sweep after every hit, and each sweep hands every key's search to a
    thread: 0.03 ms a check against 0.005 (bench/README.md). Expired entries never count (each
    hit compares times); the sweep only frees their memory."""

    SWEEP_SECONDS = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.swept_at = float("-inf")
        self.sweeps = 0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # the library's private hook
        now = time.monotonic()
        if now - self.swept_at < self.SWEEP_SECONDS:
            return
        self.swept_at = now
        self.sweeps += 1
        await super()._MemoryStorage__schedule_expiry()


class Throttle:
    """One limit, counted per key."""

    def __init__(self, rate: str, scope: str, refusal: str) -> None:
        self.item = parse(rate)
        self.scope = scope
        self.refusal = refusal
        self.storage = SweptMemoryStorage()
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def check(self, key: str) -> None:
        if not await self.limiter.hit(self.item, self.scope, key):
            stats = await self.limiter.get_window_stats(self.item, self.scope, key)
            wait = max(1, int(stats.reset_time - time.time()) + 1)
            raise RateLimited(self.refusal, retry_after=wait)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def auth_throttled(request: Request) -> None:
    """Dependency of the public authentication routes: the per-address limit."""
    throttle: Throttle = request.app.state.auth_throttle
    await throttle.check(client_address(request))


async def account_throttled(request: Request, account: str) -> None:
    """The per-account limit; `account` names what is attacked (a login, a challenge…)."""
    throttle: Throttle = request.app.state.account_throttle
    # Hashed: the limiter's keys are not a list of logins kept in memory.
    await throttle.check(hashlib.sha256(account.encode()).hexdigest())


def assertion_client(assertion: str) -> str:
    """The client a client assertion claims to be (unverified: only to count attempts)."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        return "malformed"
    return f"client:{claims.get('sub', '')}"
