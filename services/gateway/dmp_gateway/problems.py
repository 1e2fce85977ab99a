"""RFC 9457 problem details: every error leaves the gateway as application/problem+json, and the
OpenAPI document describes each operation's errors as what they are."""

from __future__ import annotations

from typing import Any, NamedTuple

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dmp_kit.errors import PROBLEM_BASE, DmpError
from dmp_kit.logging import get_logger
from dmp_kit.rpc.status import error_from_rpc

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

# The members `problem` writes, and no other: a client may rely on this schema.
SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": {
        "title": "Problem",
        "description": "An error, as RFC 9457 problem details (application/problem+json).",
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "additionalProperties": False,
        "properties": {
            "type": {
                "type": "string",
                "format": "uri",
                "description": f"stable: {PROBLEM_BASE}<slug>; clients branch on it",
            },
            "title": {"type": "string", "description": "short, for people"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string", "description": "this occurrence, for people"},
            "field": {
                "type": "string",
                "description": "the input at fault (a dotted path into the body, or a "
                "parameter's name), when there is one",
            },
            "errors": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/FieldError"},
                "description": "every input at fault, when the request failed the "
                "operation's schema (422 `validation-error`)",
            },
            "checks": {
                "type": "object",
                "additionalProperties": {"type": "boolean"},
                "description": "readiness only: whether each service answers SERVING",
            },
        },
    },
    "OAuthError": {
        "title": "OAuthError",
        "description": "An OAuth 2.0 endpoint's error (RFC 6749 §5.2, RFC 7009 §2.2.1): what "
        "OAuth client libraries read, so these endpoints alone answer it instead of a Problem.",
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "string",
                "description": "invalid_request, invalid_client, invalid_grant, "
                "unauthorized_client, unsupported_grant_type, invalid_scope, "
                "unsupported_token_type",
            },
            "error_description": {"type": "string"},
        },
    },
    "FieldError": {
        "title": "FieldError",
        "type": "object",
        "required": ["field", "message"],
        "additionalProperties": False,
        "properties": {
            "field": {"type": "string", "description": "dotted path; empty: the whole body"},
            "message": {"type": "string"},
        },
    },
}


class ErrorStatus(NamedTuple):
    meaning: str
    title: str  # as the server writes it for the first type
    types: tuple[str, ...]


# What each status means on this API, and the problem types it carries across the API (one
# operation may carry fewer of them).
STATUSES: dict[int, ErrorStatus] = {
    400: ErrorStatus(
        "The request body could not be read (not UTF-8, nested too deep…)",
        "Bad request",
        ("bad-request",),
    ),
    401: ErrorStatus(
        "No valid credentials",
        "Authentication required",
        (
            "unauthenticated",
            "invalid-token",
            "token-expired",
            "invalid-credentials",
            "invalid-otp",
            "otp-expired",
            "refresh-token-reused",
            "session-expired",
            "invalid-client",
        ),
    ),
    403: ErrorStatus(
        "The caller may not do this",
        "Not allowed",
        (
            "forbidden",
            "access-denied",
            "author-only",
            "patient-only",
            "emergency-access-refused",
            "not-your-trace",
            "conversation-not-allowed",
            "read-only",
            "not-your-measurement",
            "insufficient-scope",
        ),
    ),
    404: ErrorStatus(
        "Not found, or not the caller's to know of",
        "Not found",
        (
            "not-found",
            "dossier-not-found",
            "document-not-found",
            "patient-not-found",
            "not-supported",
            "trusted-person-not-found",
            "invitation-not-found",
            "measurement-not-found",
            "export-not-found",
            "export-expired",
            "app-not-found",
            "app-not-connected",
            "appointment-not-found",
            "reminder-not-found",
        ),
    ),
    405: ErrorStatus(
        "The FHIR endpoint does not offer this interaction (its CapabilityStatement says what "
        "it offers)",
        "Method not allowed",
        ("method-not-allowed", "not-supported"),
    ),
    406: ErrorStatus(
        "No representation the client accepts: the FHIR endpoint serves application/fhir+json only",
        "Not acceptable",
        ("not-acceptable",),
    ),
    409: ErrorStatus(
        "Conflicts with the current state",
        "Conflict with the current state",
        (
            "conflict",
            "already-exists",
            "dossier-exists",
            "dossier-closed",
            "dossier-open",
            "deletion-requested",
            "cannot-rehide",
            "contention",
            "dossier-full",
            "duplicate-unique-id",
            "rotation-too-soon",
            "conversation-closed",
            "conversation-full",
            "account-opposed",
            "opposition-too-late",
            "already-trusted",
            "too-many-trusted-persons",
            "series-full",
            "export-running",
            "export-not-ready",
            "appointment-closed",
        ),
    ),
    413: ErrorStatus("The request body is too large", "Payload too large", ("payload-too-large",)),
    415: ErrorStatus(
        "The request body is not JSON", "Unsupported media type", ("unsupported-media-type",)
    ),
    422: ErrorStatus(
        "Invalid input, `field` names it",
        "Invalid input",
        (
            "validation-error",
            "invalid-ins",
            "invalid-rpps",
            "invalid-profession",
            "invalid-client",
            "unsupported-grant-type",
            "unknown-section",
            "unknown-type-code",
            "consent-required",
            "not-a-doctor",
            "vitale-mismatch",
            "weak-password",
            "invalid-attachment",
            "trivial-password",
            "common-password",
            "personal-password",
            "wrong-password",
            "invalid-otp",
            "otp-expired",
            "not-a-patient",
            "invalid-trusted-person",
            "measurement-out-of-range",
            "invalid-authorization-request",
            "invalid-redirect-uri",
            "invalid-scope",
            "invalid-logo",
            "unknown-professional",
            "invalid-checkpoint-note",
            "checkpoint-not-signed",
            "unknown-witness",
            "invalid-cosignature",
        ),
    ),
    423: ErrorStatus(
        "Too many failed attempts, the account waits `Retry-After` seconds",
        "Account temporarily locked",
        ("account-locked",),
    ),
    429: ErrorStatus(
        "Too many requests, retry after `Retry-After` seconds",
        "Too many requests",
        ("too-many-requests", "export-rate-limited"),
    ),
    500: ErrorStatus(
        "An internal error (nothing of it is told)", "Internal error", ("internal-error",)
    ),
    503: ErrorStatus(
        "A service this operation needs is unavailable, or the platform is at capacity "
        "(`overloaded`: refused at once, retry after `Retry-After` seconds)",
        "Service temporarily unavailable",
        ("service-unavailable", "overloaded", "not-ready"),
    ),
}
# The types of the errors routes share, where their status carries others elsewhere: a bearer
# token that does not pass; a service that does not answer, or the gateway at capacity.
SHARED_TYPES = {
    401: ("unauthenticated", "invalid-token", "token-expired"),
    503: ("service-unavailable", "overloaded"),
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="dmp"'}},
    423: _RETRY_AFTER,
    429: _RETRY_AFTER,
}
# Headers an answer carries with one type of its status only.
_TYPE_HEADERS: dict[str, dict[str, Any]] = {"overloaded": _RETRY_AFTER}


def oauth_error(meaning: str) -> dict[str, Any]:
    """An OAuth endpoint's error answer, for its `responses=`."""
    return {
        "description": meaning,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}},
    }


def error_response(status: int, types: tuple[str, ...] = ()) -> dict[str, Any]:
    """The OpenAPI response object of one error status: a Problem, with the types it carries
    (by default, all those of that status)."""
    meaning, title, every_type = STATUSES[status]
    slugs = types or every_type
    listed = ", ".join(f"`{slug}`" for slug in slugs)
    response: dict[str, Any] = {
        "description": f"{meaning}. `type`: {PROBLEM_BASE}… one of {listed}.",
        "content": {
            MEDIA_TYPE: {
                "schema": {"$ref": "#/components/schemas/Problem"},
                # One per type this answer may carry: what a client branches on.
                "examples": {
                    slug: {
                        "value": {
                            "type": PROBLEM_BASE + slug,
                            "title": title,
                            "status": status,
                            "detail": meaning,
                        }
                    }
                    for slug in slugs
                },
            }
        },
    }
    headers = {
        **_HEADERS.get(status, {}),
        **{name: h for slug in slugs for name, h in _TYPE_HEADERS.get(slug, {}).items()},
    }
    if headers:
        response["headers"] = headers
    return response


def responses(
    *statuses: int, types: dict[int, tuple[str, ...]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A route's own errors, for its `responses=` (`types`: where the route carries fewer types
    than the status does across the API); those every route shares are added when the document
    is built (`document`)."""
    narrower = types or {}
    return {
        status: error_response(status, narrower.get(status, ()))
        for status in {*statuses, *narrower}
    }


def document(
    spec: dict[str, Any], *, unthrottled: frozenset[str], no_downstream: frozenset[str]
) -> dict[str, Any]:
    """Adds to FastAPI's document the errors every operation shares, from what the app does
    before a route runs: any body is bounded (413) and must be JSON unless the operation takes
    another type (415); a body the operation takes may not parse (400); a route with input
    validates it (422, replacing FastAPI's own, which the server never sends); a secured one
    needs a token (401); the per-address limit (429); every call to a service may find it down,
    and the gateway at capacity refuses it (503); and an unexpected error (500)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(SCHEMAS)
    for path, item in spec["paths"].items():
        for operation in item.values():
            answers: dict[str, Any] = operation.setdefault("responses", {})
            body = operation.get("requestBody", {}).get("content", {})
            shared = {413, 500}
            if not body or "application/json" in body:
                shared.add(415)
            if body:
                shared.add(400)
            if "422" in answers or body:
                answers["422"] = error_response(422)
            if "security" in operation:
                shared.add(401)
            if path not in unthrottled:
                shared.add(429)
            if path not in no_downstream:
                shared.add(503)
            for status in sorted(shared):
                answers.setdefault(
                    str(status), error_response(status, SHARED_TYPES.get(status, ()))
                )
            operation["responses"] = dict(sorted(answers.items()))
    return spec


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
    checks: dict[str, bool] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if field:
        body["field"] = field
    if errors is not None:
        body["errors"] = errors
    if checks is not None:
        body["checks"] = checks
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

    @app.exception_handler(grpc.aio.AioRpcError)
    async def _rpc(_: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        # A call made outside Downstream.call (the token keys' fetch): the same translation.
        return from_error(error_from_rpc(exc))

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
