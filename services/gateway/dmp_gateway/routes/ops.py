"""Operations: liveness, readiness (every downstream service's gRPC health), metrics, docs."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dmp_gateway import problems
from dmp_gateway.clients import Downstream

router = APIRouter(tags=["operations"])


@router.get("/", include_in_schema=False)
async def home() -> RedirectResponse:
    """People land on the web portal (the API lives under /v1, its docs at /docs)."""
    return RedirectResponse("/portail/", status_code=303)


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "live"}


@router.get(
    "/readyz",
    summary="Readiness: every service answers SERVING",
    responses=problems.responses(types={503: ("not-ready",)}),
)
async def readyz(request: Request) -> JSONResponse:
    ds: Downstream = request.app.state.downstream
    checks = await ds.health()
    if all(checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    down = sorted(name for name, ok in checks.items() if not ok)
    return problems.problem(
        503,
        "not-ready",
        "Not ready",
        f"not serving: {', '.join(down)}",
        checks=checks,
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    # Swagger UI is served from this origin (no CDN): see app.py's /docs-assets mount.
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="DMP API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="data:,",
    )
