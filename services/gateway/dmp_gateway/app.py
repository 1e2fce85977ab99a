"""The gateway's FastAPI application: middleware, problem details, routes, lifecycle."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from dmp_gateway import problems
from dmp_gateway.admission import Admission
from dmp_gateway.clients import Downstream
from dmp_gateway.config import GatewaySettings
from dmp_gateway.fhir import routes as fhir
from dmp_gateway.fhir.outcomes import FhirOutcomes
from dmp_gateway.limits import BodyLimit
from dmp_gateway.routes import (
    account,
    admin,
    agenda,
    apps,
    audit,
    auth,
    consent,
    dev,
    dossiers,
    exports,
    ingest,
    me,
    measurements,
    messaging,
    notifications,
    ops,
    preview,
    records,
    trusted,
)
from dmp_gateway.throttle import UNLIMITED_PATHS, Throttle, client_address
from dmp_kit import tracing
from dmp_kit.auth import TokenVerifier
from dmp_kit.clock import clock_from_path
from dmp_kit.config import Env
from dmp_kit.context import current_deadline, current_trace, new_trace
from dmp_kit.errors import RateLimited
from dmp_kit.forget import forgetting
from dmp_kit.metrics import Counter, Histogram
from dmp_kit.periodic import beside
from dmp_kit.rpc.client import MAX_MESSAGE_BYTES
from dmp_kit.runtime import identity_jwks

REQUESTS = Counter("dmp_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("dmp_http_request_seconds", "HTTP request latency", ["method", "route"])

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# The portal: its own scripts and styles only, no inline code, calls to this origin only;
# document contents are shown from blob: URLs the page makes of what the API returned.
PORTAL = "/portail"
PORTAL_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; frame-src blob:; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
PORTAL_FILES = Path(__file__).parent / "portal"
# Operations that call no service, so never answer 503.
NO_DOWNSTREAM = frozenset({"/healthz"})
# Never refused as overload: the probes (readiness asks each service, briefly, on its own
# timeout), the metrics, the documentation and the portal's files.
ALWAYS_ADMITTED = UNLIMITED_PATHS | {"/", "/docs", "/openapi.json"}
ALWAYS_ADMITTED_UNDER = (f"{PORTAL}/", "/docs-assets/")
# The interactive docs page loads its own script and styles from this origin only.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


class RequestContext:
    """The outermost of our middleware: the request's trace and deadline, the per-address
    limit, the metrics, and the headers every answer carries. Plain ASGI: as an
    `@app.middleware("http")` function, every answer was streamed through an extra task and
    memory channel (a tenth of the gateway's CPU on a page of documents)."""

    def __init__(self, app: ASGIApp, *, deadline_seconds: float, throttle: Throttle) -> None:
        self.app = app
        self.deadline_seconds = deadline_seconds
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        trace = new_trace(headers.get("x-request-id"), headers.get("traceparent"))
        current_trace.set(trace)
        # The request's budget, from its arrival: each call to a service gets what remains.
        current_deadline.set(time.monotonic() + self.deadline_seconds)
        structlog.contextvars.bind_contextvars(request_id=trace.request_id, trace_id=trace.trace_id)
        started = time.perf_counter()
        path: str = scope["path"]
        status = 500

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out = MutableHeaders(scope=message)
                out["X-Request-Id"] = trace.request_id
                for key, value in SECURITY_HEADERS.items():
                    out.setdefault(key, value)
                csp = (
                    DOCS_CSP
                    if path == "/docs"
                    else PORTAL_CSP
                    if path.startswith(PORTAL)
                    else API_CSP
                )
                out.setdefault("Content-Security-Policy", csp)
                if path.startswith(PORTAL):
                    out.setdefault("Cache-Control", "no-cache")
                if path.startswith(("/v1/", "/fhir/")):
                    out.setdefault("Cache-Control", "no-store")
            await send(message)

        try:
            try:
                if path not in UNLIMITED_PATHS:
                    await self.throttle.check(client_address(Request(scope)))
            except RateLimited as refused:
                await problems.from_error(refused)(scope, receive, answer)
            else:
                await self.app(scope, receive, answer)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], template, str(status)).inc()
            LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id", "trace_id")


def always_admitted(path: str) -> bool:
    return path in ALWAYS_ADMITTED or path == PORTAL or path.startswith(ALWAYS_ADMITTED_UNDER)


def create_app(settings: GatewaySettings) -> FastAPI:
    clock = clock_from_path(settings.clock_offset_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        downstream = Downstream(settings)
        app.state.downstream = downstream
        app.state.verifier = TokenVerifier(
            identity_jwks(downstream.channels["identity"], settings.grpc_deadline_seconds),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            clock=clock,
        )
        # The FHIR resources rendered (patient data) are kept a bounded time (dmp_kit.forget).
        async with beside(forgetting(asyncio.Event(), settings.patient_data_held_seconds)):
            yield
        await downstream.close()
        tracing.shutdown()

    app = FastAPI(
        title="DMP — Dossier Médical Partagé",
        version="1.0.0",
        description=(
            "The public API of the shared medical record platform. Errors are "
            "application/problem+json (RFC 9457) with a stable `type`."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.auth_throttle = Throttle(
        settings.auth_rate_limit,
        "auth-address",
        "too many authentication attempts from this address",
    )
    app.state.account_throttle = Throttle(
        settings.account_rate_limit,
        "auth-account",
        "too many authentication attempts for this account",
    )
    address_throttle = Throttle(
        settings.address_rate_limit, "address", "too many requests from this address"
    )
    problems.install(app)

    # These two are added first, so they run inside the middleware below: a refusal still gets
    # the request id, the security headers and CORS's (Retry-After exposed). Admission inside
    # the body limit: a request takes a slot once its body has arrived, so a client sending
    # slowly holds none.
    app.add_middleware(
        Admission,
        in_flight=settings.requests_in_flight,
        queued=settings.requests_queued,
        per_address=settings.requests_per_address,
        wait_seconds=settings.queue_wait_seconds,
        retry_after=settings.overload_retry_after_seconds,
        exempt=always_admitted,
    )
    upload = settings.max_document_bytes * 4 // 3 + 64 * 1024  # base64 plus the JSON around it
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        larger=(
            (re.compile(r"/v1/dossiers/[^/]+/documents"), upload),
            # up to three attachments of 5 MiB, in base64
            (re.compile(r"/v1/conversations(/[^/]+/messages)?"), 16 * 1024 * 1024 * 4 // 3),
            # an ITI-65 Bundle: documents in base64, in JSON, within what one gRPC message
            # to the dossier service may carry
            (re.compile(r"/fhir/R4/?"), MAX_MESSAGE_BYTES * 4 // 3),
        ),
        streamed=(re.compile(r"/v1/ingest/batches"),),
        # OAuth2: a form (RFC 6749 §4.4); FHIR searches by POST: a form too
        not_json=(
            re.compile(r"/v1/auth/token"),
            re.compile(r"/oauth/(token|revoke)"),
            re.compile(r"/fhir/R4/[A-Za-z]+/_search"),
            # a witness's cosigned checkpoint: a signed note, text/plain (C2SP)
            re.compile(r"/v1/audit/log/cosignatures"),
        ),
    )
    if settings.cors_origins:
        # Closed unless configured: only these origins, only with a bearer token, no cookie.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=["x-request-id", "retry-after", "location"],
            allow_credentials=False,
            max_age=600,
        )

    app.add_middleware(
        RequestContext,
        deadline_seconds=settings.request_deadline_seconds,
        throttle=address_throttle,
    )
    # Outermost: every error under /fhir/, the per-address limit's included, as FHIR's.
    app.add_middleware(FhirOutcomes)

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    app.mount(PORTAL, StaticFiles(directory=PORTAL_FILES, html=True), name="portal")
    app.include_router(auth.router)
    app.include_router(auth.throttled)
    app.include_router(me.router)
    app.include_router(account.router)
    app.include_router(account.throttled)
    app.include_router(exports.router)
    app.include_router(notifications.router)
    app.include_router(messaging.router)
    app.include_router(agenda.router)
    app.include_router(admin.router)
    app.include_router(dossiers.router)
    app.include_router(records.router)
    app.include_router(measurements.router)
    app.include_router(consent.router)
    app.include_router(preview.router)
    app.include_router(trusted.router)
    app.include_router(apps.router)
    app.include_router(apps.oauth)
    app.include_router(audit.router)
    app.include_router(ingest.router)
    app.include_router(ops.router)
    app.include_router(fhir.router)
    if settings.env is Env.DEV:
        app.include_router(dev.router)

    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.document(
                build_openapi(), unthrottled=UNLIMITED_PATHS, no_downstream=NO_DOWNSTREAM
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if tracing.enabled():
        # Outermost of all: the request's span is current in our middleware, whose trace
        # (and so the logs' trace_id) is the span's. Named by the route's template.
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=tracing.provider(),
            excluded_urls="/healthz,/readyz,/metrics",
            exclude_spans=["receive", "send"],
        )
        instrumented = app.build_middleware_stack

        def build_middleware_stack() -> ASGIApp:
            return KeptOnly(instrumented())

        app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    return app


class KeptOnly:
    """The instrumentation's middleware for the requests whose trace is kept (tracing.entered);
    the others go around it, straight to the stack it wraps: a span made and not recorded
    cost each request more than all of our own middleware (docs/observability.md)."""

    def __init__(self, instrumented: ASGIApp) -> None:
        self.traced = instrumented
        # The instrumentation's stack: ServerErrorMiddleware(OpenTelemetryMiddleware(stack)).
        # Should another version build it otherwise, every request takes the traced way.
        around = getattr(instrumented, "app", None)
        self.plain: ASGIApp = (
            around.app if isinstance(around, OpenTelemetryMiddleware) else instrumented
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            traceparent = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"), None
            )
            if not tracing.entered(traceparent):
                await self.plain(scope, receive, send)
                return
        await self.traced(scope, receive, send)
