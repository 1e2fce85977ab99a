"""RFC 9457 problem details: every error leaves the gateway as application/problem+json."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dmp_kit.errors import PROBLEM_BASE, DmpError
from dmp_kit.logging import get_logger

log = get_logger(__name__)
MEDIA_TYPE = "application/problem+json"

_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if field:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def from_error(err: DmpError) -> JSONResponse:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else None
    if err.http_status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="dmp"'}
    return problem(
        err.http_status, err.problem, err.title, err.detail, field=err.field, headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(DmpError)
    async def _dmp(_: Request, exc: DmpError) -> JSONResponse:
        return from_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"] if p != "body"),
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return problem(
            422,
            "validation-error",
            "Invalid input",
            f"{first['field'] or 'body'}: {first['message']}",
            field=first["field"] or None,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _HTTP_SLUGS.get(exc.status_code, "error")
        return problem(
            exc.status_code,
            slug,
            slug.replace("-", " ").capitalize(),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error")
        return problem(500, "internal-error", "Internal error", "an internal error occurred")
