"""The audit gRPC servicer."""

from __future__ import annotations

from dmp.audit.v1 import audit_pb2_grpc


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """The contract of proto/dmp/audit/v1; each method answers UNIMPLEMENTED until issue #4."""
