"""Admission: how many API requests this gateway process works on at once, and the fast
refusal of the others.

Past what the stack sustains, more requests at work only make each one slower: they queue in
the services and the database until they outlast their deadline, every caller gets a 503 after
seconds, and the work already started goes on after the load has gone. So a bounded number of
requests are at work at once (a slot each, from when the body has arrived until the answer
starts), and one finding every slot taken waits only if it can expect a slot soon: the slots'
recent turnover (how long a request has held one lately, over the number of slots) times its
place in the queue is within `wait_seconds`. A burst on a quiet gateway waits and is served; a
load the stack cannot carry is refused at once, 503 `overloaded` with Retry-After, which a
client can act on, instead of after a wait that ends the same way. A waiting request gives up
at `PATIENCE` times that (slots held far longer than lately: a stalled service, not a queue).

No client starves the others: the per-address rate limits (throttle.py) run first, and while
every slot is taken, an address that already has `per_address` requests at work or waiting is
refused at once, so a request from anyone else finds room in the queue and the next free slot.
The paths `exempt` names (probes, metrics, documentation, the portal's files: none calls a
service) are never refused.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dmp_gateway import problems
from dmp_kit.errors import Unavailable
from dmp_kit.metrics import Counter, Gauge, Histogram

IN_FLIGHT = Gauge("dmp_http_requests_in_flight", "API requests holding a slot")
QUEUED = Gauge("dmp_http_requests_queued", "API requests waiting for a slot")
REFUSED = Counter("dmp_http_requests_refused_total", "API requests refused as overload")
REFUSAL_SECONDS = Histogram(
    "dmp_http_refusal_seconds",
    "Time from an API request's arrival at admission until its overload refusal was sent",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

PATIENCE = 4
# Weight of the latest hold time in the running mean (about the last ten requests).
SMOOTHING = 0.1


class Admission:
    """ASGI middleware: at most `in_flight` requests hold a slot; up to `queued` more wait for
    one when they can expect it within `wait_seconds`, and while every slot is taken no client
    address has more than `per_address` at work or waiting; the others are refused at once."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        in_flight: int,
        queued: int,
        per_address: int,
        wait_seconds: float,
        retry_after: int,
        exempt: Callable[[str], bool],
    ) -> None:
        self.app = app
        self.size = in_flight
        self.slots = asyncio.Semaphore(in_flight)
        self.queued = queued
        self.per_address = per_address
        self.waiting = 0
        self.wait_seconds = wait_seconds
        self.retry_after = retry_after
        self.exempt = exempt
        self.held = 0.0  # running mean of how long a request holds its slot, in seconds
        # slots held and awaited, by client address
        self.shares: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        client = scope.get("client")
        address = client[0] if client else ""
        if not await self._admitted(address):
            REFUSED.inc()
            refusal = Unavailable(
                "the platform is at capacity; retry later",
                slug="overloaded",
                retry_after=self.retry_after,
            )
            await problems.from_error(refusal)(scope, receive, send)
            REFUSAL_SECONDS.observe(time.monotonic() - arrived)
            return
        IN_FLIGHT.inc()
        taken = time.monotonic()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.held += SMOOTHING * (time.monotonic() - taken - self.held)
                IN_FLIGHT.dec()
                self._leave(address)
                self.slots.release()

        async def answer(message: Message) -> None:
            # The work is done when the answer starts: a client slow to read it holds no slot.
            if message["type"] == "http.response.start":
                release()
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            release()

    async def _admitted(self, address: str) -> bool:
        # A free slot is taken at once (`locked` is true while others wait: none is passed).
        if not self.slots.locked():
            await self.slots.acquire()
            self.shares[address] += 1
            return True
        if self.shares[address] >= self.per_address:
            return False
        expected = (self.waiting + 1) * self.held / self.size
        if self.waiting >= self.queued or expected > self.wait_seconds:
            return False
        self.waiting += 1
        self.shares[address] += 1
        QUEUED.inc()
        admitted = False
        try:
            async with asyncio.timeout(PATIENCE * self.wait_seconds):
                await self.slots.acquire()
            admitted = True
        except TimeoutError:
            pass
        finally:
            self.waiting -= 1
            QUEUED.dec()
            if not admitted:
                self._leave(address)
        return admitted

    def _leave(self, address: str) -> None:
        self.shares[address] -= 1
        if not self.shares[address]:
            del self.shares[address]
