"""Domain errors with one stable vocabulary, carried over gRPC and rendered as problem+json."""

from __future__ import annotations

import grpc

PROBLEM_BASE = "https://dmp.localhost/problems/"


class DmpError(Exception):
    """An error a caller caused or must know about; never a bug.

    `slug` is the stable problem type (`PROBLEM_BASE + slug`); `field` names the
    input at fault when there is one.
    """

    slug: str = "error"
    title: str = "Error"
    grpc_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    http_status: int = 500

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        slug: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.problem = slug or self.slug
        self.retry_after = retry_after


class InvalidArgument(DmpError):
    slug = "validation-error"
    title = "Invalid input"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 422


class Unauthenticated(DmpError):
    slug = "unauthenticated"
    title = "Authentication required"
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class PermissionDenied(DmpError):
    slug = "forbidden"
    title = "Not allowed"
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class NotFound(DmpError):
    slug = "not-found"
    title = "Not found"
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class AlreadyExists(DmpError):
    slug = "already-exists"
    title = "Already exists"
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


class Conflict(DmpError):
    slug = "conflict"
    title = "Conflict with the current state"
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class Locked(DmpError):
    slug = "account-locked"
    title = "Account temporarily locked"
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 423


class RateLimited(DmpError):
    slug = "too-many-requests"
    title = "Too many requests"
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class PayloadTooLarge(DmpError):
    slug = "payload-too-large"
    title = "Payload too large"
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


class NotAcceptable(DmpError):
    """No representation the client accepts (HTTP only)."""

    slug = "not-acceptable"
    title = "Not acceptable"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 406


class UnsupportedMediaType(DmpError):
    """A body of a kind the operation does not take (HTTP only)."""

    slug = "unsupported-media-type"
    title = "Unsupported media type"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 415


class MethodNotAllowed(DmpError):
    """An operation the resource does not offer (HTTP only)."""

    slug = "method-not-allowed"
    title = "Method not allowed"
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    http_status = 405


class Unavailable(DmpError):
    slug = "service-unavailable"
    title = "Service temporarily unavailable"
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class Unimplemented(DmpError):
    slug = "not-implemented"
    title = "Not implemented"
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    http_status = 501


class Internal(DmpError):
    slug = "internal-error"
    title = "Internal error"
    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500


ERRORS: tuple[type[DmpError], ...] = (
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    Conflict,
    Locked,
    RateLimited,
    PayloadTooLarge,
    Unavailable,
    Unimplemented,
    Internal,
)
# Several errors share a gRPC code (RESOURCE_EXHAUSTED: locked, rate-limited, too large); with
# the HTTP status the raising service sends along, the error is rebuilt as the one it raised.
BY_CODE_AND_STATUS: dict[tuple[grpc.StatusCode, int], type[DmpError]] = {
    (cls.grpc_code, cls.http_status): cls for cls in ERRORS
}
# By the code alone, where it names one error only.
BY_GRPC_CODE: dict[grpc.StatusCode, type[DmpError]] = {
    cls.grpc_code: cls
    for cls in ERRORS
    if sum(other.grpc_code == cls.grpc_code for other in ERRORS) == 1
}
