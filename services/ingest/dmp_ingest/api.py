"""The ingest gRPC servicer."""

from __future__ import annotations

from dmp.ingest.v1 import ingest_pb2_grpc


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """The contract of proto/dmp/ingest/v1; each method answers UNIMPLEMENTED until issue #5."""
