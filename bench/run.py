"""Benchmarks: `make bench` (or `python -m bench.run [scenario ...]`).

Each scenario measures a target and a floor in the same run, interleaved, so the ratio holds
on a noisy shared machine; results go to bench/results/<scenario>.json and bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import importlib
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dmp.notify.v1 import notify_pb2 as pb
from dmp.notify.v1 import notify_pb2_grpc
from dmp_kit.auth import JwksCache, TokenVerifier
from dmp_kit.clock import SystemClock
from dmp_kit.logging import configure as configure_logging
from dmp_kit.rpc.interceptors import AuthInterceptor, ErrorInterceptor, RequestContextInterceptor
from dmp_stack.infra import free_port as free_port_
from dmp_stack.infra import mongo_choice, spawn
from dmp_stack.stack import stop_pid
from dmp_stack.testing import RunningStack, collect_events, own_infra, running_stack

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parent / "README.md"


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 4),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 4),
        "throughput_per_s": round(len(ms) / (sum(ms) / 1000), 1),
    }


# The series measured first and most: results/<scenario>.json. Other servers get their own file.
DEFAULT_DATABASE = "ferretdb postgresql"


# Scenarios that start no database: one result whatever the server.
WITHOUT_DATABASE = {"token_verification", "ingest_parse"}


@functools.cache
def database() -> str:
    """The MongoDB-compatible server the scenarios start; `main` asks before any starts."""
    return mongo_choice()


def database_of(scenario: str) -> str:
    return "none" if scenario in WITHOUT_DATABASE else database()


def result_file(scenario: str) -> str:
    used = database_of(scenario)
    if used in (DEFAULT_DATABASE, "none"):
        return f"{scenario}.json"
    return f"{scenario}.{re.sub(r'[^a-z0-9]+', '-', used.lower()).strip('-')}.json"


def saved(file: str, result: dict[str, Any]) -> dict[str, Any]:
    """`result` written as `results/<file>` and printed."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / file).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def header(scenario: str, description: str) -> dict[str, Any]:
    """What every result starts with: what was measured, when, on what."""
    return {
        "scenario": scenario,
        "description": description,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "database": database(),
        "commit": os.environ.get("DMP_BENCH_COMMIT", ""),
    }


def record(
    name: str,
    description: str,
    target: dict[str, Any],
    floor: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    result = {
        "scenario": name,
        "description": description,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": (
            f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "database": database_of(name),
        "target": target,
        "floor": floor,
        "ratio_median_to_floor": round(target["median_ms"] / floor["median_ms"], 2),
        **extra,
    }
    return saved(result_file(name), result)


# --- scenario: login + OTP + /v1/me through the whole stack ----------------------------


def login_otp_me(iterations: int) -> dict[str, Any]:
    with bench_stack() as running:
        admin = running.admin_token()
        patient = running.create_patient(admin)
        journeys: list[float] = []
        floors: list[float] = []
        with running.client() as c:
            for _ in range(5):  # warm-up
                c.get("/healthz")
            for _ in range(iterations):
                t0 = time.perf_counter()
                c.get("/healthz")
                floors.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                tokens = running.login(
                    "patient", patient["ins"], patient["password"], patient["email"]
                )
                r = c.get("/v1/me", headers={"authorization": f"Bearer {tokens['access_token']}"})
                assert r.status_code == 200, r.text
                journeys.append(time.perf_counter() - t0)
        return record(
            "login_otp_me",
            "Patient login through the gateway: password (argon2id) → code by real SMTP → "
            "code exchanged for tokens → GET /v1/me. Floor: GET /healthz on the same gateway.",
            summary(journeys),
            summary(floors),
            {"iterations": iterations},
        )


# --- scenario: what token verification adds to a gRPC call ----------------------------


KEY = Ed25519PrivateKey.generate()
PUBLIC = "/dmp.notify.v1.NotifyService/ListDevOutbox"


class Echo(notify_pb2_grpc.NotifyServiceServicer):
    async def ListDevOutbox(self, request: Any, context: Any) -> pb.ListDevOutboxResponse:
        return pb.ListDevOutboxResponse()

    async def GetPreferences(self, request: Any, context: Any) -> pb.GetPreferencesResponse:
        return pb.GetPreferencesResponse()


def access_token(sub: str) -> str:
    now = datetime.now(UTC)
    return jwt.encode(
        {
            "iss": "bench",
            "aud": "dmp",
            "sub": sub,
            "kind": "patient",
            "roles": ["patient"],
            "ins": "180017512345660",
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(hours=1)).timestamp()),
        },
        KEY,
        algorithm="EdDSA",
        headers={"kid": "k", "typ": "at+jwt"},
    )


async def _keys() -> Iterable[Mapping[str, str]]:
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": "k",
            "alg": "EdDSA",
            "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
        }
    ]


async def _token_verification(iterations: int) -> dict[str, Any]:
    configure_logging("bench", "WARNING", b"bench-pseudonym-key")
    verifier = TokenVerifier(
        JwksCache(_keys), issuer="bench", audience="dmp", clock=SystemClock(), cache_size=100
    )
    server = grpc.aio.server(
        interceptors=[
            RequestContextInterceptor(),
            ErrorInterceptor(),
            AuthInterceptor(verifier, frozenset({PUBLIC})),
        ]
    )
    notify_pb2_grpc.add_NotifyServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = notify_pb2_grpc.NotifyServiceStub(channel)
    # A fresh token per call: every call pays a full verification (no cache hit).
    tokens = [access_token(f"acc-{i}") for i in range(iterations)]

    async def timed(call: Callable[[], Awaitable[Any]]) -> float:
        t0 = time.perf_counter()
        await call()
        return time.perf_counter() - t0

    for i in range(200):  # warm-up
        await stub.ListDevOutbox(pb.ListDevOutboxRequest(), timeout=5)
        await stub.GetPreferences(
            pb.GetPreferencesRequest(),
            timeout=5,
            metadata=(("authorization", f"Bearer {tokens[i]}"),),
        )
    session = (("authorization", f"Bearer {access_token('session')}"),)
    floor: list[float] = []
    verified: list[float] = []
    cached: list[float] = []
    for i in range(iterations):
        floor.append(await timed(lambda: stub.ListDevOutbox(pb.ListDevOutboxRequest(), timeout=5)))
        md = (("authorization", f"Bearer {tokens[i]}"),)
        verified.append(
            await timed(
                lambda md=md: stub.GetPreferences(
                    pb.GetPreferencesRequest(), timeout=5, metadata=md
                )
            )
        )
        # The same session token again: what a service sees on every call after the first.
        cached.append(
            await timed(
                lambda: stub.GetPreferences(pb.GetPreferencesRequest(), timeout=5, metadata=session)
            )
        )
    await channel.close()
    await server.stop(0)

    # The verification alone, in-process, for reference.
    direct: list[float] = []
    for token in tokens[: min(iterations, 2000)]:
        t0 = time.perf_counter()
        await verifier.verify(token)
        direct.append(time.perf_counter() - t0)
    target, base, steady = summary(cached), summary(floor), summary(verified)
    added = round(target["median_ms"] - base["median_ms"], 4)
    added_fresh = round(steady["median_ms"] - base["median_ms"], 4)
    return record(
        "token_verification",
        "Unary gRPC call on loopback through the kit's interceptors with a session's access "
        "token (verified once, then from the verified-token cache) vs. the same server's public "
        "method (no verification); also a fresh, never-seen token per call (full EdDSA "
        "signature check). The three kinds of call are interleaved.",
        target,
        base,
        {
            "iterations": iterations,
            "added_ms_per_call": added,
            "target_added_ms": 0.2,
            "meets_target": added < 0.2,
            "fresh_token": steady,
            "added_ms_per_call_fresh_token": added_fresh,
            "fresh_token_meets_target": added_fresh < 0.2,
            "verify_alone_fresh": summary(direct),
        },
    )


def token_verification(iterations: int) -> dict[str, Any]:
    return asyncio.run(_token_verification(iterations))


# --- scenarios: consult and submit through the whole stack ----------------------------------


class Load:
    """Closed-loop throughput and open-loop (fixed-rate) latency against one URL."""

    def __init__(self, base: str) -> None:
        self.base = base

    async def closed(
        self, call: Callable[[httpx.AsyncClient], Awaitable[int]], workers: int, seconds: float
    ) -> dict[str, Any]:
        done: list[float] = []
        errors = 0
        end = time.perf_counter() + seconds

        async def worker(c: httpx.AsyncClient) -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    failed = await call(c) >= 400
                except httpx.HTTPError:
                    failed = True
                errors += failed
                done.append(time.perf_counter() - t0)

        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
        async with httpx.AsyncClient(base_url=self.base, timeout=30, limits=limits) as c:
            started = time.perf_counter()
            await asyncio.gather(*(worker(c) for _ in range(workers)))
            elapsed = time.perf_counter() - started
        return {
            **summary(done),
            "throughput_per_s": round(len(done) / elapsed, 1),
            "workers": workers,
            "errors": errors,
        }

    async def open(
        self, call: Callable[[httpx.AsyncClient], Awaitable[int]], rate: float, seconds: float
    ) -> dict[str, Any]:
        """Requests leave on a fixed schedule; latency counts from the scheduled start, so a
        slow server is not hidden by the client waiting (no coordinated omission)."""
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        timeout = httpx.Timeout(30, pool=120)
        async with httpx.AsyncClient(base_url=self.base, timeout=timeout, limits=limits) as c:
            start = time.perf_counter()

            async def one(at: float) -> None:
                nonlocal errors
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                try:
                    failed = await call(c) >= 400
                except httpx.HTTPError:  # the server fell so far behind that the pool gave up
                    failed = True
                errors += failed
                latencies.append(time.perf_counter() - at)

            await asyncio.gather(*(one(start + i / rate) for i in range(int(rate * seconds))))
        return {**summary(latencies), "rate_per_s": rate, "errors": errors}


# Benchmarks run the services as deployed: quiet logs, the time-based rules at their default.
BENCH_ENV = {
    # The system clock, as `make up` runs (the tests' movable clock reads a file's status at
    # every reading of the time); no scenario moves the time.
    "DMP_CLOCK_OFFSET_FILE": "",
    "DMP_LOG_LEVEL": "WARNING",
    "DMP_SCHEDULE_INTERVAL_SECONDS": "60",
    "DMP_REMB_REFRESH_INTERVAL_SECONDS": "3600",
}


@contextmanager
def bench_stack(floor: bool = False) -> Iterator[RunningStack]:
    """The whole platform on servers of its own (FerretDB's backend per DMP_FERRETDB_BACKEND),
    and with `floor` the bare FastAPI app the scenarios compare against, on the same database;
    everything stopped after."""
    with (
        own_infra("dmp-bench-", fault_proxy=False) as infra,
        running_stack(infra, env=BENCH_ENV) as running,
    ):
        if not floor:
            yield running
            return
        floor_port = free_port_()
        floor_proc = spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.floor_app:app",
                "--port",
                str(floor_port),
                "--log-level",
                "warning",
            ],
            infra.root / "floor.log",
            env={**os.environ, "DMP_MONGO_URL": infra.mongo.url},
            cwd=Path(__file__).parent.parent,
        )
        try:
            running.floor_url = f"http://127.0.0.1:{floor_port}"  # type: ignore[attr-defined]
            wait_http(running.floor_url + "/docs")  # type: ignore[attr-defined]
            yield running
        finally:
            stop_pid(floor_proc.pid)


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def _patient_with_gp(running: RunningStack) -> tuple[str, str]:
    admin = running.admin_token()
    patient = running.create_patient(admin)
    gp = running.create_professional(admin, "10")
    ins = patient["ins"]
    pt = running.login("patient", ins, patient["password"], patient["email"])["access_token"]
    with running.client(pt) as c:
        assert (
            c.post(
                "/v1/dossiers",
                json={
                    "ins": ins,
                    "vitale_serial": patient["vitale_serial"],
                    "patient_consent": True,
                },
            ).status_code
            == 201
        )
        for _ in range(100):
            if (
                c.put(
                    f"/v1/dossiers/{ins}/attending-physician", json={"rpps": gp["rpps"]}
                ).status_code
                == 200
            ):
                break
            time.sleep(0.1)
    token = running.login("professional", gp["rpps"], gp["password"], gp["email"])
    return ins, str(token["access_token"])


def _document(i: int, size: int = 4096) -> dict[str, Any]:
    return {
        "type_code": "11502-2",
        "title": f"Compte rendu {i}",
        "mime_type": "text/plain",
        "content_base64": base64.b64encode(os.urandom(size)).decode(),
    }


Call = Callable[[httpx.AsyncClient], Awaitable[int]]


async def against_floor(
    running: RunningStack, platform: Call, bare: Call, *, rate: int, seconds: int
) -> dict[str, Any]:
    """The platform and its floor, each closed-loop (16 workers) then open-loop at `rate`."""
    gw, fl = Load(running.url), Load(running.floor_url)  # type: ignore[attr-defined]
    await gw.closed(platform, 8, 3)  # warm-up
    at = f"at_{rate}_per_s"
    return {
        "sustained": await gw.closed(platform, 16, seconds),
        "floor_sustained": await fl.closed(bare, 16, seconds),
        at: await gw.open(platform, rate, seconds),
        f"floor_{at}": await fl.open(bare, rate, seconds),
    }


def consult(seconds: int) -> dict[str, Any]:
    with bench_stack(floor=True) as running:
        ins, token = _patient_with_gp(running)
        with running.client(token) as c:
            for i in range(200):
                assert (
                    c.post(f"/v1/dossiers/{ins}/documents", json=_document(i, 512)).status_code
                    == 201
                )
        auth = {"authorization": f"Bearer {token}"}

        async def platform(c: httpx.AsyncClient) -> int:
            r = await c.get(f"/v1/dossiers/{ins}/documents?page_size=200", headers=auth)
            return r.status_code

        async def bare(c: httpx.AsyncClient) -> int:
            return (await c.get(f"/floor/list/{ins}")).status_code

        r = asyncio.run(against_floor(running, platform, bare, rate=150, seconds=seconds))
        return record(
            "consult",
            "A GP lists a dossier of 200 documents through the gateway (token check, one consent "
            "FilterDocuments, the MongoDB query, the audit record acknowledged by JetStream), "
            "whole stack on this 2-core machine. Floor: a bare FastAPI route doing the same "
            "MongoDB query. Targets: >= 300 req/s sustained; p99 <= 50 ms at 150 req/s.",
            r["sustained"],
            r["floor_sustained"],
            {
                **r,
                "seconds": seconds,
                "meets_targets": r["sustained"]["throughput_per_s"] >= 300
                and r["at_150_per_s"]["p99_ms"] <= 50,
            },
        )


def _gp_submits(running: RunningStack) -> tuple[str, Call]:
    """A patient's INS, and one call of their GP adding a 4 KB document through the gateway."""
    ins, token = _patient_with_gp(running)
    auth = {"authorization": f"Bearer {token}"}
    body = _document(0)

    async def platform(c: httpx.AsyncClient) -> int:
        r = await c.post(f"/v1/dossiers/{ins}/documents", json=body, headers=auth)
        return r.status_code

    return ins, platform


def submit(seconds: int) -> dict[str, Any]:
    with bench_stack(floor=True) as running:
        _, platform = _gp_submits(running)
        body = _document(0)  # the same size as the platform's

        async def bare(c: httpx.AsyncClient) -> int:
            return (await c.post("/floor/submit", json=body)).status_code

        r = asyncio.run(against_floor(running, platform, bare, rate=75, seconds=seconds))
        return record(
            "submit",
            "A GP adds a 4 KB document through the gateway (token check, consent Decide, "
            "encryption under the patient's key, chunk and metadata writes with their events and "
            "audit record in the outbox). Floor: a bare FastAPI route doing one insert_one of the "
            "same body. Targets: >= 150 documents/s; p99 <= 80 ms at 75/s.",
            r["sustained"],
            r["floor_sustained"],
            {
                **r,
                "seconds": seconds,
                "meets_targets": r["sustained"]["throughput_per_s"] >= 150
                and r["at_75_per_s"]["p99_ms"] <= 80,
            },
        )


def notify_latency(seconds: int) -> dict[str, Any]:
    """From a document.added event to the patient's inbox entry, idle and under submit load."""
    from pymongo import MongoClient

    with bench_stack() as running:
        ins, platform = _gp_submits(running)

        async def idle() -> None:
            async with httpx.AsyncClient(base_url=running.url, timeout=30) as c:
                for _ in range(30):
                    await platform(c)
                    await asyncio.sleep(0.2)

        asyncio.run(idle())
        quiet = _inbox_latencies(running, ins, MongoClient, 30)
        added, seen, by_rate = 30, len(quiet), {}
        for rate in (30, 75):  # below what submit sustains here (~63/s), then its target load
            load = asyncio.run(Load(running.url).open(platform, rate, seconds))
            added += load["n"] - load["errors"]
            latencies = _inbox_latencies(running, ins, MongoClient, added)[seen:]
            seen += len(latencies)
            by_rate[rate] = {"inbox": summary(latencies), "submit": load}
        return record(
            "notify_latency",
            "Time from a document.added event (its occurred_at, in the dossier service) to the "
            "patient's inbox entry (its created_at, in notify): the outbox relay, JetStream, "
            "the consumer, the inbox write. Target: while a GP adds documents at 75/s (open "
            "loop, as the submit benchmark); also at 30/s. Floor: one document every 0.2 s.",
            by_rate[75]["inbox"],
            summary(quiet),
            {
                "at_30_per_s": by_rate[30],
                "at_75_per_s": by_rate[75],
                "seconds": seconds,
                "target_p99_ms": 100,
            },
        )


def _inbox_latencies(
    running: RunningStack, ins: str, client_class: Any, expected: int
) -> list[float]:
    """Every document.added of this dossier paired with its inbox entry, oldest first."""
    mongo = client_class(os.environ["DMP_MONGO_URL"])
    try:
        events = asyncio.run(
            collect_events(
                running.infra.nats.url,
                "DOSSIER",
                "document.added",
                lambda seen: sum(e.patient_ins == ins for e in seen) >= expected,
                wait=120,
            )
        )
        occurred = {
            e.id: e.occurred_at.ToDatetime(tzinfo=UTC) for e in events if e.patient_ins == ins
        }
        deadline = time.monotonic() + 120
        while True:
            docs = list(
                mongo["notify"]["notifications"].find(
                    {"recipient": f"patient:{ins}", "kind": "document_added"}
                )
            )
            if len(docs) >= len(occurred) or time.monotonic() > deadline:
                break
            time.sleep(1)
        out = []
        for doc in sorted(docs, key=lambda d: d["_id"]):
            event_id = doc["_id"].split(":", 1)[0]
            if event_id in occurred:
                created = doc["created_at"].replace(tzinfo=UTC)
                out.append((created - occurred[event_id]).total_seconds())
        return out
    finally:
        mongo.close()


def _elsewhere(module: str, name: str) -> Callable[[int], dict[str, Any]]:
    """A scenario defined in another bench module, imported when run (it imports this one)."""

    def run(n: int) -> dict[str, Any]:
        # `python -m bench.run` is `__main__`, so the module imports a second `bench.run`:
        # its choice of server is made now, before a started stack sets DMP_MONGO_URL.
        importlib.import_module("bench.run").database()
        scenario: Callable[[int], dict[str, Any]] = getattr(importlib.import_module(module), name)
        return scenario(n)

    return run


SCENARIOS: dict[str, tuple[Callable[[int], dict[str, Any]], int]] = {
    "login_otp_me": (login_otp_me, 40),
    "token_verification": (token_verification, 5000),
    "consult": (consult, 10),
    "submit": (submit, 10),
    "audit_append": (_elsewhere("bench.audit", "audit_append"), 50_000),
    "audit_append_spread": (_elsewhere("bench.audit", "audit_append_spread"), 50_000),
    "audit_scale": (_elsewhere("bench.audit_scale", "audit_scale"), 10_000_000),
    "audit_verify": (
        _elsewhere("bench.audit", "audit_verify"),
        1_000_000,
    ),  # and audit_proof, on the same log
    "notify_latency": (notify_latency, 10),
    "ingest_parse": (_elsewhere("bench.ingest", "ingest_parse"), 1_000_000),
    "ingest_write": (_elsewhere("bench.ingest", "ingest_write"), 500_000),
    "ingest_5m": (_elsewhere("bench.ingest", "ingest_5m"), 5_000_000),
    "request_cost": (_elsewhere("bench.cost", "request_cost"), 1000),
    "dossier_growth": (_elsewhere("bench.growth", "dossier_growth"), 100_000),
    "ferretdb_reads": (_elsewhere("bench.ferretdb_reads", "ferretdb_reads"), 100),
    "db_client": (_elsewhere("bench.db_client", "db_client"), 3000),
    "hop_costs": (_elsewhere("bench.hop_costs", "hop_costs"), 3000),
    "listing_append": (_elsewhere("bench.listing_append", "listing_append"), 20_000),
    "agenda_schedule": (_elsewhere("bench.agenda_schedule", "agenda_schedule"), 10_000),
    "overload": (_elsewhere("bench.overload", "overload"), 20),
    "outbox_lag": (_elsewhere("bench.relay", "outbox_lag"), 30),
    "outbox_burst": (_elsewhere("bench.relay", "outbox_burst"), 3000),
    "fhir_search": (_elsewhere("bench.fhir", "fhir_search"), 100),
    "observability_overhead": (_elsewhere("bench.overhead", "observability_overhead"), 1000),
    "storage_per_document": (_elsewhere("bench.capacity", "storage_per_document"), 50),
}


# audit_verify also records audit_proof.
SCENARIO_NAMES = {*SCENARIOS, "audit_proof"}


def write_readme() -> None:
    rows = []
    results = [json.loads(path.read_text()) for path in RESULTS.glob("*.json")]
    # Only the scenarios' own results (the soak and the fault runs keep theirs beside them).
    results = [r for r in results if r.get("scenario") in SCENARIO_NAMES and "target" in r]
    for r in sorted(results, key=lambda r: (r["scenario"], r.get("database", DEFAULT_DATABASE))):
        t, f = r["target"], r["floor"]
        extra = ""
        if "added_ms_per_call" in r:
            extra = (
                f"adds {r['added_ms_per_call']} ms per call with a session token, "
                f"{r['added_ms_per_call_fresh_token']} ms with a never-seen one (target < 0.2)"
            )
        for rate_key in ("at_150_per_s", "at_75_per_s"):
            if rate_key in r and "sustained" in r:
                extra = (
                    f"{r['sustained']['throughput_per_s']}/s sustained vs floor "
                    f"{r['floor_sustained']['throughput_per_s']}/s; p99 at "
                    f"{r[rate_key]['rate_per_s']:.0f}/s: {r[rate_key]['p99_ms']:.0f} ms "
                    f"(floor {r['floor_' + rate_key]['p99_ms']:.0f} ms)"
                )
        if "entries_per_s" in r:
            extra = (
                f"{r['entries_per_s']} entries/s sustained (target ≥ {r['target_entries_per_s']}); "
                f"floor {r['floor_entries_per_s']}/s"
            )
        if "seconds_total" in r:
            extra = (
                f"{r['entries']:,} entries in {r['seconds_total']} s (target ≤ "
                f"{r['target_seconds']}): database {r['seconds_database']} s, "
                f"CPU {r['seconds_cpu']} s"
            )
            if "cpu_seconds" in r:  # each party's CPU during a verification
                split = ", ".join(f"{k} {v}" for k, v in r["cpu_seconds"].items())
                extra += f"; CPU s during it: {split}"
        if r["scenario"] == "notify_latency":
            extra = (
                f"inbox p99 {t['p99_ms']:.0f} ms under submit at 75/s (target ≤ 100), "
                f"{r['at_30_per_s']['inbox']['p99_ms']:.0f} ms at 30/s, "
                f"{f['p99_ms']:.0f} ms idle"
            )
        if r["scenario"] == "outbox_lag":
            extra = (
                f"write → publish p99 {t['p99_ms']:.0f} ms at {r['rate_per_s']}/s "
                f"(target ≤ {r['target_p99_ms']}), {f['p99_ms']:.0f} ms at 5/s"
            )
        if r["scenario"] == "outbox_burst":
            extra = (
                f"{r['acknowledged']:,} documents written at {r['write_rate_per_s']}/s; after the "
                f"last write: published {r['published']['seconds_after_last_write']} s, traced "
                f"{r['traced']['seconds_after_last_write']} s, notified "
                f"{r['notified']['seconds_after_last_write']} s "
                f"(target ≤ {r['target_seconds']:.0f})"
            )
        if r["scenario"] == "ingest_parse":
            extra = f"{r['rows_per_s']:,} rows/s on one core (target ≥ 200,000)"
        if "share_of_raw" in r:
            extra = (
                f"{r['rows_per_s']:,} rows/s end to end = {r['share_of_raw']:.0%} of a raw "
                f"insert_many ({r['raw_rows_per_s']:,}/s; target ≥ 80 %)"
            )
        if "peak_rss_mb" in r:
            extra = f"{r['rows_per_s']:,} rows/s; peak RSS MB {r['peak_rss_mb']}"
        if r["scenario"] == "audit_proof":
            extra = (
                f"p99 {t['p99_ms']} ms over gRPC (target ≤ {r['target_p99_ms']}; the bare "
                f"call's p99 {f['p99_ms']} ms); computing the proof: median "
                f"{r['computing_only']['median_ms']} ms, p99 {r['computing_only']['p99_ms']} ms"
            )
        if r["scenario"] == "audit_scale":
            targets = r["targets"]
            extra = (
                f"{r['entries']:,} entries: proof p99 {t['p99_ms']} ms (target ≤ "
                f"{targets['proof_p99_ms']}); RSS {r['rss_mb_served']} MB (target ≤ "
                f"{targets['rss_mb']}); start to serving {r['restart_to_serving_s']} s, of which "
                f"loading the log {r['load_s']} s (target ≤ {targets['restart_s']}); hashes "
                f"{r['hash_bytes_per_entry']} B/entry, all collections "
                f"{sum(r['bytes_per_entry'].values()):.0f} B/entry"
                + (
                    f" as BSON, {r['disk_bytes_per_entry']:,.0f} B/entry on disk"
                    if "disk_bytes_per_entry" in r
                    else ""
                )
                + (
                    f"; tile files {r['tile_file_bytes_per_entry']} B/entry; a new replica"
                    + (
                        f": proof p99 {r['new_replica_proof']['p99_ms']} ms while it fills its "
                        f"tile files ({r['new_replica_fill']['tiles']:,} tiles in "
                        f"{r['new_replica_fill']['seconds']} s), "
                        f"{r['new_replica_filled_proof']['p99_ms']} ms after"
                        if "new_replica_fill" in r
                        else f" with no tile files: proof p99 {r['new_replica_proof']['p99_ms']} ms"
                    )
                    if "new_replica_proof" in r
                    else ""
                )
            )
        if r["scenario"] == "overload":
            on, off = r["with_admission"], r["without_admission"]
            extra = (
                f"at 2 × {r['sustainable_per_s']}/s: goodput {on['goodput_per_s']}/s, "
                f"{on['refused_share']:.0%} refused (p99 {_p99(on['refusal_latency'])} ms), "
                f"recovered in {on['recovery_s']} s; without admission: goodput "
                f"{off['goodput_per_s']}/s, p99 {_p99(off['success_latency'])} ms, "
                f"{sum(off['other_failures'].values())} failed, recovered in {off['recovery_s']} s"
            )
        rows.append(
            f"| `{r['scenario']}` | {r.get('database', DEFAULT_DATABASE)} | {t['n']} | "
            f"{t['median_ms']} | {t['p99_ms']} | "
            f"{t['throughput_per_s']} | {f['median_ms']} | {r['ratio_median_to_floor']} | "
            f"{extra} | {r['measured_at']} |"
        )
    text = README.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    table = "\n".join(
        [
            start,
            "| scenario | database | n | median ms | p99 ms | per s | floor median ms | ratio "
            "| note | measured |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            end,
        ]
    )
    text = text[: text.index(start)] + table + text[text.index(end) + len(end) :]
    start, end = "<!-- cost:start -->", "<!-- cost:end -->"
    if start in text:
        costs = importlib.import_module("bench.cost").cost_table()
        text = (
            text[: text.index(start) + len(start)] + "\n" + costs + "\n" + text[text.index(end) :]
        )
    README.write_text(text)


def _p99(figures: dict[str, Any] | None) -> str:
    return "–" if figures is None else f"{figures['p99_ms']:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=list(SCENARIOS))
    parser.add_argument("--iterations", type=int)
    args = parser.parse_args()
    print(f"database: {database()}", file=sys.stderr)
    for name in args.scenarios or list(SCENARIOS):
        run, default = SCENARIOS[name]
        run(args.iterations or default)
    write_readme()


if __name__ == "__main__":
    main()
