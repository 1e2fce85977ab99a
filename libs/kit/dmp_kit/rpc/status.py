"""DmpError ⇄ gRPC rich status (google.rpc.Status with ErrorInfo and BadRequest details)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from dmp_kit.errors import (
    BY_CODE_AND_STATUS,
    BY_GRPC_CODE,
    DmpError,
    Internal,
    PayloadTooLarge,
)
from dmp_kit.logging import get_logger

log = get_logger(__name__)

DETAILS_KEY = "grpc-status-details-bin"
DOMAIN = "dmp"


def status_details(err: DmpError) -> bytes:
    info = error_details_pb2.ErrorInfo(
        reason=err.problem, domain=DOMAIN, metadata={"http_status": str(err.http_status)}
    )
    if err.field:
        info.metadata["field"] = err.field
    if err.retry_after is not None:
        info.metadata["retry_after"] = str(err.retry_after)
    details = [any_pb2.Any()]
    details[0].Pack(info)
    if err.field:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=err.field, description=err.detail)
            ]
        )
        details.append(any_pb2.Any())
        details[1].Pack(bad)
    status = status_pb2.Status(code=err.grpc_code.value[0], message=err.detail, details=details)
    encoded: bytes = status.SerializeToString()
    return encoded


def error_from_rpc(exc: grpc.aio.AioRpcError) -> DmpError:
    """Rebuilds the error a downstream service raised, so it reaches the caller unchanged."""
    code = exc.code()
    cls = BY_GRPC_CODE.get(code, Internal)
    info: error_details_pb2.ErrorInfo | None = None
    for key, value in exc.trailing_metadata() or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                candidate = error_details_pb2.ErrorInfo()
                if detail.Unpack(candidate):
                    info = candidate
    if info is None:
        # Not one of ours (a transport or library error): never pass its text on.
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return BY_GRPC_CODE[grpc.StatusCode.UNAVAILABLE](
                "a service did not answer in time", slug="service-unavailable"
            )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return PayloadTooLarge("the request is too large")
        # The code only: a library's text may quote what it was given.
        log.warning("downstream_error_without_details", grpc_status=code.name)
        return cls("the call failed")
    retry = info.metadata.get("retry_after")
    http_status = info.metadata.get("http_status", "")
    if http_status.isdigit():
        cls = BY_CODE_AND_STATUS.get((code, int(http_status)), cls)
    err = cls(
        exc.details() or "",
        field=info.metadata.get("field") or None,
        slug=info.reason or None,
        retry_after=int(retry) if retry else None,
    )
    err.grpc_code = code
    if "http_status" in info.metadata:
        err.http_status = int(info.metadata["http_status"])
    return err
