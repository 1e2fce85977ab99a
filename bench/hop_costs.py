"""What each hop of a submission costs on its own: `python -m bench.run hop_costs`.

A submission crosses, besides our own code: an HTTP request into the gateway, a gRPC call
from the gateway to the dossier service, the dossier's database commands, the relay's
JetStream publishes, and after the answer the patient's e-mail. Each is measured here alone,
on an otherwise idle machine, with the libraries and settings the services use (uvloop,
uvicorn with httptools, grpc.aio, pymongo's asynchronous client on FerretDB/PostgreSQL,
nats-py, aiosmtplib to the harness's SMTP sink), as CPU milliseconds per hop of the process
named: the floor a submission cannot go under while it takes these hops in Python. Beside
them, the gateway's own application (its middleware, routing, validation and answer) called
in this process with a canned dossier answer and the token taken as verified.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import uvloop
from pydantic import BaseModel

from bench.run import header, saved
from dmp_stack.infra import free_port
from dmp_stack.testing import own_infra

ROUNDS = 3
TICK = os.sysconf("SC_CLK_TCK")
CONTENT = base64.b64encode(os.urandom(4096)).decode()  # the benchmarks' 4 KB document
BODY = {
    "type_code": "11488-4",
    "title": "Compte rendu de consultation",
    "mime_type": "application/pdf",
    "content_base64": CONTENT,
}


def _cpu(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _ours() -> float:
    t = os.times()
    return t.user + t.system


async def _per_call(
    call: Callable[[], Awaitable[Any]], calls: int, server: int | None = None
) -> dict[str, Any]:
    """CPU ms per call of this process (and of `server`'s), the median of ROUNDS rounds."""
    for _ in range(min(300, calls)):  # connections open, code paths warm
        await call()
    ours, theirs = [], []
    for _ in range(ROUNDS):
        before, other = _ours(), _cpu(server) if server else 0.0
        for _ in range(calls):
            await call()
        ours.append((_ours() - before) * 1000 / calls)
        if server:
            theirs.append((_cpu(server) - other) * 1000 / calls)
    out: dict[str, Any] = {"client_cpu_ms": round(statistics.median(ours), 3)}
    if server:
        out["server_cpu_ms"] = round(statistics.median(theirs), 3)
    out["client_rounds"] = [round(v, 3) for v in ours]
    if server:
        out["server_rounds"] = [round(v, 3) for v in theirs]
    return out


class Doc(BaseModel):
    """The floor route's body: the submission's fields that matter to its size."""

    type_code: str
    title: str
    mime_type: str
    content_base64: str


def _serve_http(port: int) -> None:
    """A bare FastAPI route taking the submission's body, under uvicorn as the gateway runs."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/dossiers/{ins}/documents", status_code=201)
    async def add(ins: str, body: Doc) -> dict[str, Any]:
        content = base64.b64decode(body.content_base64)
        return {"ins": ins, "title": body.title, "size": len(content)}

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def _serve_grpc(port: int) -> None:
    """A bare grpc.aio unary method answering 200 bytes."""
    import grpc

    async def main() -> None:
        server = grpc.aio.server()

        async def answer(request: bytes, context: Any) -> bytes:
            return request[:200]

        handler = grpc.method_handlers_generic_handler(
            "bench.Hop", {"Call": grpc.unary_unary_rpc_method_handler(answer)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def _server(kind: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.hop_costs", kind, str(port)])


def _wait(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server ended"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the server did not listen")


async def _http(port: int, pid: int, calls: int) -> dict[str, Any]:
    """Closed loop, 8 connections, as request_cost loads the gateway: the server's CPU."""
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as c:
        left = 0

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                r = await c.post("/v1/dossiers/1/documents", json=BODY)
                assert r.status_code == 201, r.text

        async def batch() -> None:
            nonlocal left
            left = 8
            await asyncio.gather(*(worker() for _ in range(8)))

        figures = await _per_call(batch, max(1, calls // 8), pid)
    return {
        "server_cpu_ms": round(figures["server_cpu_ms"] / 8, 3),
        "server_rounds": [round(v / 8, 3) for v in figures["server_rounds"]],
    }


async def _grpc(port: int, pid: int, calls: int) -> dict[str, Any]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_unary("/bench.Hop/Call")
        request = json.dumps(BODY).encode()  # about what AddDocument carries

        async def call() -> None:
            await method(request, timeout=5)

        return await _per_call(call, calls, pid)


async def _database(url: str, pid: int, calls: int) -> dict[str, Any]:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        docs = client["bench_hops"]["docs"]
        await docs.insert_one({"_id": "listing", "v": 0})
        n = 0

        async def insert() -> None:
            nonlocal n
            n += 1
            await docs.insert_one({"_id": f"chunk-{n}", "data": CONTENT})

        async def update() -> None:
            await docs.update_one({"_id": "listing", "v": {"$gte": 0}}, {"$inc": {"v": 1}})

        async def read() -> None:
            await docs.find_one({"_id": "listing"})

        out = {}
        for name, f in (("insert_4kb", insert), ("guarded_update", update), ("read", read)):
            figures = await _per_call(f, calls, pid)
            out[name] = {
                "client_cpu_ms": figures["client_cpu_ms"],
                "ferretdb_cpu_ms": figures["server_cpu_ms"],  # PostgreSQL's not counted
                "client_rounds": figures["client_rounds"],
                "ferretdb_rounds": figures["server_rounds"],
            }
        return out
    finally:
        await client.close()


async def _publish(url: str, calls: int) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="BENCH_HOPS", subjects=["bench.hops.>"])
        payload = os.urandom(600)  # about a document.added envelope

        async def publish() -> None:
            await js.publish("bench.hops.x", payload)

        return await _per_call(publish, calls)
    finally:
        await nc.close()


async def _email(smtp_url: str, calls: int) -> dict[str, Any]:
    from dmp_notify.channels import EmailSender
    from dmp_notify.config import NotifySettings
    from dmp_notify.domain import document_added, otp_message

    smtp = urlparse(smtp_url)
    # dev: its published development keys accepted, as the local stack's
    settings = NotifySettings(env="dev", smtp_host=smtp.hostname, smtp_port=smtp.port)
    sender = EmailSender(settings)
    notice = document_added("1234567890123", False)[0].message
    n = 0

    async def notify() -> None:
        nonlocal n
        n += 1
        await sender.send("patient@example.org", notice, delivery=f"bench-{n}:patient:email")

    async def code() -> None:  # rendered whole, as every e-mail was before 2026-12-05
        await sender.send("patient@example.org", otp_message("123456", 10))

    return {
        "notice": await _per_call(notify, calls),
        "rendered_whole": await _per_call(code, calls),
    }


async def _gateway_app(calls: int) -> dict[str, Any]:
    """The gateway's ASGI application called directly (no HTTP parsing, no gRPC, no token
    check): what its middleware, routing, validation and answer cost a submission."""
    from dmp.dossier.v1 import dossier_pb2 as pb
    from dmp_gateway.app import create_app
    from dmp_gateway.clients import call_options
    from dmp_gateway.config import GatewaySettings
    from dmp_kit.auth import Principal

    settings = GatewaySettings(env="dev", address_rate_limit="100000000/minute")
    app = create_app(settings)
    answer = pb.AddDocumentResponse(
        document=pb.DocumentMetadata(
            id="0193a3b4-1111-7000-8000-000000000000",
            ins="1234567890123",
            type_code="11488-4",
            section="comptes-rendus",
            title=BODY["title"],
            author="10000000001",
            mime_type="application/pdf",
            size=4096,
            sha256="ab" * 32,
            status=pb.DOCUMENT_STATUS_APPROVED,
        )
    )
    answer.document.created_at.GetCurrentTime()

    class Dossier:
        async def AddDocument(self, request: Any, **options: Any) -> Any:
            return answer

    class Downstream:
        dossier = Dossier()

        async def call(self, method: Any, request: Any, token: str = "", fields: Any = None) -> Any:
            return await method(request, **call_options(settings.grpc_deadline_seconds, token))

    class Verifier:
        async def verify(self, token: str) -> Principal:
            return Principal(
                kind="professional",
                subject="10000000001",
                rpps="10000000001",
                profession="10",
                token=token,
                expires_at=time.time() + 3600,
            )

    app.state.downstream = Downstream()
    app.state.verifier = Verifier()
    body = json.dumps(BODY).encode()
    headers = [
        (b"host", b"gateway"),
        (b"authorization", b"Bearer token"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def call() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/dossiers/1234567890123/documents",
            "raw_path": b"/v1/dossiers/1234567890123/documents",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("10.0.0.7", 5000),
            "server": ("gateway", 80),
            "state": {},
        }
        given = False
        status = []

        async def receive() -> dict[str, Any]:
            nonlocal given
            if given:
                await asyncio.sleep(3600)
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        assert status == [201], status

    return await _per_call(call, calls)


async def _all(
    infra: Any, http: tuple[int, int], rpc: tuple[int, int], calls: int
) -> dict[str, Any]:
    assert infra.mongo.pid is not None
    return {
        "http_request_bare_fastapi": await _http(*http, calls),
        "grpc_unary_call": await _grpc(*rpc, calls),
        "database_command": await _database(infra.mongo.url, infra.mongo.pid, calls),
        "jetstream_publish": await _publish(infra.nats.url, calls),
        "email": await _email(infra.smtp.url, calls),
        "gateway_application": await _gateway_app(calls),
    }


def hop_costs(calls: int) -> dict[str, Any]:
    http_port, grpc_port = free_port(), free_port()
    servers = [_server("serve-http", http_port), _server("serve-grpc", grpc_port)]
    try:
        _wait(http_port, servers[0])
        _wait(grpc_port, servers[1])
        with own_infra("dmp-bench-", fault_proxy=False) as infra:
            per_hop = uvloop.run(
                _all(infra, (http_port, servers[0].pid), (grpc_port, servers[1].pid), calls)
            )
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
    description = " ".join(__doc__.split("\n\n")[1].split()) if __doc__ else ""
    result = {
        **header("hop_costs", description),
        "calls": calls,
        "rounds": ROUNDS,
        "cpu_ms_per_hop": per_hop,
    }
    return saved("hop_costs.json", result)


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    {"serve-http": _serve_http, "serve-grpc": _serve_grpc}[kind](port)
