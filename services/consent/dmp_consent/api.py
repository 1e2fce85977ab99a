"""The consent gRPC servicer."""

from __future__ import annotations

from dmp.consent.v1 import consent_pb2_grpc


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    """The contract of proto/dmp/consent/v1; each method answers UNIMPLEMENTED until issue #3."""
