"""A per-address rate limit on the public authentication routes (limits, moving window)."""

from __future__ import annotations

import time

from fastapi import Request
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from dmp_kit.errors import RateLimited


class AuthThrottle:
    """In memory, per gateway replica: a replica's share of the limit, by design simple."""

    def __init__(self, rate: str) -> None:
        self.item = parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def check(self, address: str) -> None:
        if not await self.limiter.hit(self.item, "auth", address):
            stats = await self.limiter.get_window_stats(self.item, "auth", address)
            wait = max(1, int(stats.reset_time - time.time()) + 1)
            raise RateLimited(
                "too many authentication attempts from this address", retry_after=wait
            )


async def auth_throttled(request: Request) -> None:
    """Dependency of the public authentication routes."""
    throttle: AuthThrottle = request.app.state.auth_throttle
    await throttle.check(request.client.host if request.client else "unknown")
