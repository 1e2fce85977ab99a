"""Overload: the consult request offered at twice the rate the stack sustains, through a gateway
as deployed (its admission limits at their defaults) and through one without them (today's
behaviour before them), on the same stack.

First a closed-loop sweep over the number of requests in flight (on the gateway without
limits) gives the sustainable rate, the best throughput of the sweep, and shows where it stops
growing (what `DMP_REQUESTS_IN_FLIGHT` is set from). Then each gateway gets twice that rate,
open loop, from 64 client addresses, for `seconds`: goodput (successes per second), the share
refused, the latency of successes and of refusals from each request's scheduled start, and the
recovery: from the end of the load until a request succeeds again at normal latency (twice
the idle median).
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from bench.run import Load, _document, _patient_with_gp, bench_stack, record, summary
from dmp_gateway.config import GatewaySettings
from dmp_stack.testing import scrape

SWEEP = (1, 2, 4, 8, 16, 32)
ADMISSION = ("requests_in_flight", "requests_queued", "requests_per_address", "queue_wait_seconds")
# The settings as deployed, and none: every request admitted at once.
AS_DEPLOYED = {
    f"DMP_{name.upper()}": str(GatewaySettings.model_fields[name].default) for name in ADMISSION
}
UNLIMITED = {"DMP_REQUESTS_IN_FLIGHT": "1000000", "DMP_REQUESTS_QUEUED": "0"}
RECOVERY_CAP_S = 180.0
CLIENTS = 64


@dataclass
class Answer:
    latency: float  # from the scheduled start
    outcome: str  # "ok", a problem type's slug, "http-<status>", or "timeout"


def outcome(status: int, body: bytes) -> str:
    if status < 400:
        return "ok"
    try:
        return str(json.loads(body)["type"]).rsplit("/", 1)[-1]
    except (ValueError, KeyError):
        return f"http-{status}"


def figures(latencies: list[float]) -> dict[str, float] | None:
    return summary(latencies) if latencies else None


async def flood(
    url: str, path: str, auth: dict[str, str], rate: float, seconds: float, ended: asyncio.Event
) -> tuple[list[Answer], float, float]:
    """`rate` requests a second for `seconds`, open loop (`ended` is set when the last one
    leaves); the answers, the schedule's length, and how long the last answers took after it."""
    answers: list[Answer] = []
    # aiohttp, not httpx: with hundreds of requests in flight httpx's pool spends ~3 ms of CPU
    # a request, on the two cores the stack uses, and times its own backlog
    # (tests/e2e/test_overload.py).
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=2048)
    async with aiohttp.ClientSession(url, timeout=timeout, connector=connector) as c:
        start = time.perf_counter()

        async def one(at: float, client: int) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            # Many clients, as the reverse proxy names them (the gateway trusts loopback).
            headers = {**auth, "x-forwarded-for": f"10.1.0.{client}"}
            try:
                async with c.get(path, headers=headers) as r:
                    result = outcome(r.status, await r.read())
            except TimeoutError:
                result = "timeout"
            except aiohttp.ClientError:
                result = "connection-error"
            answers.append(Answer(time.perf_counter() - at, result))

        tasks = [
            asyncio.create_task(one(start + i / rate, 1 + i % CLIENTS))
            for i in range(int(rate * seconds))
        ]
        await asyncio.sleep(max(0.0, start + seconds - time.perf_counter()))
        stopped = time.perf_counter()
        ended.set()
        await asyncio.gather(*tasks)
        done = time.perf_counter()
    return answers, stopped - start, done - stopped


async def recovery(url: str, path: str, auth: dict[str, str], normal: float) -> float:
    """Seconds until one request answers 200 within `normal` seconds (one every 50 ms)."""
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        while time.perf_counter() - start < RECOVERY_CAP_S:
            t0 = time.perf_counter()
            try:
                ok = (await c.get(path, headers=auth)).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok and time.perf_counter() - t0 <= normal:
                return time.perf_counter() - start
            await asyncio.sleep(0.05)
    return math.inf


async def under_load(
    url: str, path: str, auth: dict[str, str], rate: float, seconds: float, normal: float
) -> dict[str, Any]:
    """The flood, and the recovery measured from the end of its schedule, alongside the answers
    still coming back."""
    ended = asyncio.Event()
    before = refusal_times(url)
    flooding = asyncio.create_task(flood(url, path, auth, rate, seconds, ended))
    await ended.wait()
    recovered = await recovery(url, path, auth, normal)
    answers, offered_s, tail_s = await flooding
    at_gateway = {bound: n - before.get(bound, 0) for bound, n in refusal_times(url).items() if n}
    ok = [a.latency for a in answers if a.outcome == "ok"]
    refused = [a.latency for a in answers if a.outcome == "overloaded"]
    others: dict[str, int] = {}
    for a in answers:
        if a.outcome not in ("ok", "overloaded"):
            others[a.outcome] = others.get(a.outcome, 0) + 1
    return {
        "offered_per_s": rate,
        "requests": len(answers),
        "goodput_per_s": round(len(ok) / (offered_s + tail_s), 1),
        "succeeded": len(ok),
        "refused_overloaded": len(refused),
        "refused_share": round(len(refused) / len(answers), 3),
        "other_failures": others,
        "success_latency": figures(ok),
        "refusal_latency": figures(refused),
        # By the gateway's clock: refusals sent within each bound (s), from its histogram
        "refusal_seconds_at_gateway": at_gateway,
        "last_answer_after_load_s": round(tail_s, 2),
        "recovery_s": round(recovered, 2) if math.isfinite(recovered) else None,
    }


def refusal_times(url: str) -> dict[str, float]:
    """The gateway's histogram of the time it took to refuse: refusals within each bound."""
    return {
        s.labels["le"]: s.value for s in scrape(url) if s.name == "dmp_http_refusal_seconds_bucket"
    }


async def sweep(url: str, path: str, auth: dict[str, str]) -> dict[int, dict[str, Any]]:
    async def consult(c: httpx.AsyncClient) -> int:
        return (await c.get(path, headers=auth)).status_code

    load = Load(url)
    await load.closed(consult, 4, 3)  # warm-up
    return {n: await load.closed(consult, n, 5) for n in SWEEP}


async def idle(url: str, path: str, auth: dict[str, str]) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        for _ in range(40):
            t0 = time.perf_counter()
            assert (await c.get(path, headers=auth)).status_code == 200
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
    return out


def overload(seconds: int) -> dict[str, Any]:
    with bench_stack() as running:
        ins, token = _patient_with_gp(running)
        with running.client(token) as c:
            for i in range(200):
                r = c.post(f"/v1/dossiers/{ins}/documents", json=_document(i, 512))
                assert r.status_code == 201, r.text
        auth = {"authorization": f"Bearer {token}"}
        path = f"/v1/dossiers/{ins}/documents?page_size=50"
        with (
            running.another_gateway("gateway-as-deployed", AS_DEPLOYED) as deployed,
            running.another_gateway("gateway-unlimited", UNLIMITED) as unlimited,
        ):
            by_in_flight = asyncio.run(sweep(unlimited, path, auth))
            sustainable = max(r["throughput_per_s"] for r in by_in_flight.values())
            rate = round(2 * sustainable, 1)
            quiet = asyncio.run(idle(deployed, path, auth))
            normal = 2 * statistics.median(quiet)
            # The limited gateway first: the unlimited one's aftermath would weigh on it.
            with_limits = asyncio.run(under_load(deployed, path, auth, rate, seconds, normal))
            time.sleep(10)
            without = asyncio.run(under_load(unlimited, path, auth, rate, seconds, normal))
    # Recorded once the stack is down: while it runs, DMP_MONGO_URL names its database, and the
    # record would name that variable instead of the server.
    target = with_limits["success_latency"] or summary([math.inf])
    return record(
        "overload",
        "A GP lists a page of 50 of a 200-document dossier, open loop at twice the rate the "
        "stack sustains (the best of a closed-loop sweep over requests in flight), through "
        "a gateway as deployed (admission at its defaults) and one without admission limits, "
        "on the same stack. Target: the successes' latency at that load; floor: the same "
        "request on the idle stack. Goodput, refusals (503 overloaded) and their latency, "
        "recovery after the load (until a request succeeds within twice the idle median).",
        {**target, "throughput_per_s": with_limits["goodput_per_s"]},
        summary(quiet),
        {
            "seconds": seconds,
            "admission": AS_DEPLOYED,
            "sustainable_per_s": sustainable,
            "by_requests_in_flight": by_in_flight,
            "normal_latency_ms": round(normal * 1000, 1),
            "with_admission": with_limits,
            "without_admission": without,
        },
    )
